"""The Redis transport keeps one command client per channel, parses replies with hiredis,
reads an exchange's bindings once per publish batch and, on a worker's event loop,
removes acknowledged messages in batches, on a real Redis."""

from __future__ import annotations

import uuid

import redis
from kombu.entity import Exchange, Queue
from redis._parsers import _HiredisParser

from celeryconfig import celery_config
from core.outages import publish_batch
from core.redis_options import REDIS_CLIENT_OPTIONS
from core.redis_transport import TRANSPORT, Channel
from core.settings import Settings, get_settings
from tests.support import redis_commands, redis_commands_naming, wait_for, worker_taking_over
from workers.app import app

# Enough tasks, sent at once, for the acknowledgements of several to fall in one batch.
ACKED_TASKS = 20


def test_a_channel_sends_its_commands_with_one_client_until_its_pool_is_replaced():
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, Channel)  # the suite's broker is Redis
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.ping()
        # kombu drops its pools when it loses the connection; the next command builds a
        # client on the new pool.
        channel._disconnect_pools()
        with channel.conn_or_acquire() as third:
            assert third is not first
            assert third.connection_pool is channel.pool
            assert third.ping()


def test_matchops_selects_it_for_redis_brokers_and_leaves_rabbitmq_to_kombu():
    for url, transport in (
        ("redis://127.0.0.1:6379/0", TRANSPORT),
        ("rediss://redis.internal:6380/0", TRANSPORT),
        ("amqp://guest:guest@127.0.0.1:5672/matchops", None),
    ):
        assert celery_config(Settings(broker_url=url))["broker_transport"] == transport, url


def test_its_connections_parse_replies_with_hiredis():
    # redis-py ignores a missing or too old hiredis (below 3.2) without a word, and
    # parses every reply of the worker's BRPOP loop and acknowledgements in Python.
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as client:
            pool = client.connection_pool
            redis_connection = pool.get_connection()
            try:
                assert isinstance(redis_connection._parser, _HiredisParser)
            finally:
                pool.release(redis_connection)


def test_a_publish_batch_reads_its_exchanges_bindings_once_and_the_next_batch_anew():
    exchange = Exchange(f"test-bindings-{uuid.uuid4()}", type="topic")
    first, later = (Queue(f"{exchange.name}-{n}", exchange, "match.*") for n in (1, 2))
    client = redis.Redis.from_url(get_settings().broker, **REDIS_CLIENT_OPTIONS)
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        producer = connection.Producer(serializer="json")
        bindings = channel.keyprefix_queue % exchange.name

        def batch_of_five() -> None:
            with publish_batch(producer, 5):
                for n in range(5):
                    producer.publish({"n": n}, exchange=exchange, routing_key="match.proposed")

        first.bind(channel).declare()
        try:
            looked_up = redis_commands_naming(bindings, batch_of_five, get_settings().broker)
            assert looked_up.count("SMEMBERS") == 1
            # Bound between two batches: the next batch routes to it.
            later.bind(channel).declare()
            batch_of_five()
            assert (client.llen(first.name), client.llen(later.name)) == (10, 5)
            # Outside a batch every message reads the bindings, as kombu does.
            single = redis_commands_naming(
                bindings,
                lambda: producer.publish({}, exchange=exchange, routing_key="match.found"),
                get_settings().broker,
            )
            assert single.count("SMEMBERS") == 1
        finally:
            for queue in (first, later):
                queue.bind(channel).delete()
            client.delete(bindings)


def test_a_worker_removes_its_acknowledged_messages_from_redis_in_batches(worker):
    # kombu keeps each message a worker takes in a hash and a sorted set until the
    # acknowledgement removes it; the worker removes many with one ZREM and one HDEL.
    ids = [f"acked-{uuid.uuid4()}" for _ in range(ACKED_TASKS)]
    client = redis.Redis.from_url(get_settings().broker, **REDIS_CLIENT_OPTIONS)
    with app.connection_for_write() as connection:
        qos = connection.default_channel.qos
        kept, index = qos.unacked_key, qos.unacked_index_key

    def still_kept() -> bool:
        return any(i in str(body) for body in client.hvals(kept) for i in ids)

    def run() -> None:
        sent = [app.send_task("events.publish", task_id=i, ignore_result=False) for i in ids]
        for result in sent:
            result.get(timeout=60)
        wait_for(lambda: not still_kept(), what="the acknowledged messages removed")

    with worker_taking_over(worker, "events", "acks-in-batches", {}):
        commands = redis_commands(kept, run, get_settings().broker)

    # HSET <hash> <delivery tag> <message>: the tags of this test's messages.
    tags = {c.split()[2] for c in commands if c.startswith("HSET") and any(i in c for i in ids)}
    # ZREM <index> <tag> ...: each removal that took some of them.
    removals = [
        removed
        for c in commands
        if c.startswith(f"ZREM {index} ") and (removed := set(c.split()[2:]) & tags)
    ]
    assert len(tags) == ACKED_TASKS
    assert set().union(*removals) == tags
    assert len(removals) <= ACKED_TASKS // 2, f"{len(removals)} removals of {ACKED_TASKS}"


def test_a_consumer_without_an_event_loop_removes_each_acknowledged_message_at_once():
    queue = Queue(f"test-acks-{uuid.uuid4()}")
    client = redis.Redis.from_url(get_settings().broker, **REDIS_CLIENT_OPTIONS)
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        bound = queue.bind(channel)
        bound.declare()
        try:
            connection.Producer(serializer="json").publish({"n": 1}, routing_key=queue.name)
            message = bound.get(no_ack=False)
            assert message is not None
            assert client.hexists(channel.qos.unacked_key, message.delivery_tag)
            message.ack()
            assert not client.hexists(channel.qos.unacked_key, message.delivery_tag)
        finally:
            bound.delete()
