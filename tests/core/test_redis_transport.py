"""The Redis transport keeps one command client per channel and parses replies with hiredis,
on a real Redis."""

from __future__ import annotations

from redis._parsers import _HiredisParser

from celeryconfig import celery_config
from core.redis_transport import TRANSPORT, Channel
from core.settings import Settings
from workers.app import app


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
