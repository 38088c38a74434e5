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

kombu emulates acknowledgement on Redis: each message a consumer takes is kept in a hash
and a sorted set until it is acknowledged (restored to its queue if not, after the
visibility timeout), and each acknowledgement removes it with a round trip of its own.
On an event loop (a worker's), the removals wait up to ACK_FLUSH_SECONDS and go out
together: one round trip for the acknowledgements of many tasks. The message is
acknowledged for kombu at once (the worker may take the next one); only the removal
waits. A worker that dies in that window leaves those messages to be delivered again
after the visibility timeout, as it would a message it died running, and the task base
replays their recorded outcomes. Without an event loop (a plain kombu consumer) every
acknowledgement is removed at once.

celeryconfig selects it for `redis://` and `rediss://` brokers (`broker_transport`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

# What celeryconfig names as `broker_transport`.
TRANSPORT = "core.redis_transport:Transport"
# How long an acknowledged message's removal from the unacknowledged set may wait for
# others to go with it: the task events' flush interval (workers.consumer), so both
# batches grow alike with the rate of tasks.
ACK_FLUSH_SECONDS = 0.05

logger = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    """kombu's acknowledgement emulation, removing acknowledged messages in batches
    while the channel's transport runs on an event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acked: list[str] = []

    def ack(self, delivery_tag: str) -> None:
        """Acknowledge for kombu now; remove from Redis with the batch (at once without
        an event loop)."""
        loop = self.channel.connection.event_loop
        if loop is None:
            super().ack(delivery_tag)
            return
        # kombu's bookkeeping of delivered messages, without the Redis transport's removal.
        virtual.QoS.ack(self, delivery_tag)
        self._acked.append(delivery_tag)
        if len(self._acked) == 1:
            loop.call_later(ACK_FLUSH_SECONDS, self.flush_acks)

    def flush_acks(self) -> None:
        """Remove every acknowledged message still kept, in one round trip."""
        tags, self._acked = self._acked, []
        if not tags:
            return
        try:
            with self.pipe_or_acquire() as pipe:
                pipe.zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags).execute()
        except redis.RedisError as exc:
            # The broker's outage reaches the consumer too, which reconnects; these
            # messages come back after the visibility timeout and replay their outcomes.
            logger.warning("%d acknowledgements not removed from Redis: %s", len(tags), exc)


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, keeping the client it sends commands with and, for each
    publish batch, the binding tables its messages were routed by; its acknowledgements
    are removed in batches on an event loop (`QoS`)."""

    QoS = QoS
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

    def close(self) -> None:
        """Remove the acknowledged messages still kept, then close as kombu does."""
        if not self.closed and self._qos is not None:
            self._qos.flush_acks()
        super().close()


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with `Channel` above, knowing the event loop it runs on."""

    Channel = Channel
    # The event loop the transport is registered with; None for a plain consumer.
    event_loop: Any = None

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """kombu's registration; acknowledgements are batched on `loop` from now on."""
        super().register_with_event_loop(connection, loop)
        self.event_loop = loop
