"""The process's Redis client for matchops' own keys: session documents, the follow-up
markers of commit triggers, the supervision records.

One client (one connection pool) per process, built on first use from the settings:
SESSION_REDIS_URL, or the result backend's Redis when that is unset. Its connections
carry the timeouts and keepalives every matchops Redis connection has
(`core.redis_options`).
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

import redis

from core.redis_options import REDIS_CLIENT_OPTIONS
from core.settings import get_settings

RedisClient = redis.Redis


@lru_cache(maxsize=1)
def redis_client() -> RedisClient:
    """The process's client for matchops' own keys (SESSION_REDIS_URL or the result
    backend); its answers are decoded to `str`."""
    url = get_settings().session_store_url
    parts = urlsplit(url)
    if parts.scheme == "redis+socket":
        # kombu's spelling of a unix socket; redis-py calls it unix://
        url = urlunsplit(("unix", "", parts.path, parts.query, ""))
    return redis.Redis.from_url(url, decode_responses=True, **REDIS_CLIENT_OPTIONS)
