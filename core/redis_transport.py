"""kombu's Redis transport, with one command client per channel instead of one per command.

kombu makes a new redis-py client for each command it sends outside its BRPOP loop
(`Channel.conn_or_acquire`): the bookkeeping of every message a worker reserves and of
every acknowledgement (late acknowledgement keeps each unacknowledged message in Redis),
every publish batch. A redis-py 8 client costs about 0.1 ms of CPU to build, and a
worker's main process built two per task. The client holds no connection of its own:
it is a facade over the channel's connection pool, so one client per channel serves
every command, and a new one is built whenever kombu replaces the pool (after a lost
connection).

celeryconfig selects it for `redis://` and `rediss://` brokers (`broker_transport`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

# What celeryconfig names as `broker_transport`.
TRANSPORT = "core.redis_transport:Transport"


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, keeping the client it sends commands with."""

    _command_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """`client` if given, else the channel's command client on its current pool."""
        if client:
            yield client
            return
        pool = self.pool
        command_client = self._command_client
        if command_client is None or command_client.connection_pool is not pool:
            command_client = self._command_client = self._create_client()
        yield command_client


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with `Channel` above."""

    Channel = Channel
