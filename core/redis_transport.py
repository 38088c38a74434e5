"""kombu's Redis transport, with one command client per channel instead of one per command,
and an exchange's bindings read once per publish batch instead of once per message.

kombu makes a new redis-py client for each command it sends outside its BRPOP loop
(`Channel.conn_or_acquire`): the bookkeeping of every message a worker reserves and of
every acknowledgement (late acknowledgement keeps each unacknowledged message in Redis),
every publish batch. A redis-py 8 client costs about 0.1 ms of CPU to build, and a
worker's main process built two per task. The client holds no connection of its own:
it is a facade over the channel's connection pool, so one client per channel serves
every command, and a new one is built whenever kombu replaces the pool (after a lost
connection).

kombu routes each message published to a topic or direct exchange by the exchange's
bindings, a set it reads from Redis (`get_table`, an SMEMBERS) for every message: the
relay publishing a batch of events asked for the same set once per event, each a round
trip before the batch's one pipeline. Within a publish batch (core.outages.publish_batch)
the set is read at the batch's first message to that exchange and kept for the rest of
it: the batch's messages are routed by the bindings as they stood when it began, as if
it had been published at that moment. The next batch reads them again, so a queue bound
meanwhile gets its messages.

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
    """kombu's Redis channel, keeping the client it sends commands with and, for each
    publish batch, the binding tables its messages were routed by."""

    _command_client: Any = None
    # The batch whose message is being routed now, while kombu routes it.
    _routing_batch: Any = None
    # The batch the tables below were read for: a channel publishes one batch at a time.
    _tables_batch: Any = None
    _tables: dict[str, list[Any]]

    def basic_publish(self, message: Any, exchange: str, routing_key: str, **kwargs: Any) -> Any:
        """kombu's publish; a message of a publish batch is routed by the batch's tables."""
        self._routing_batch = kwargs.get("_publish_batch")
        try:
            return super().basic_publish(message, exchange, routing_key, **kwargs)
        finally:
            self._routing_batch = None

    def get_table(self, exchange: str) -> list[Any]:
        """The exchange's bindings: read from Redis once per publish batch, at every call
        outside one."""
        batch = self._routing_batch
        if batch is None:
            table: list[Any] = super().get_table(exchange)
            return table
        if self._tables_batch is not batch:
            self._tables_batch, self._tables = batch, {}
        if exchange not in self._tables:
            self._tables[exchange] = super().get_table(exchange)
        return self._tables[exchange]

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
