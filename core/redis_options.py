"""The options of every Redis connection matchops opens: broker, result backend, session keys.

A Redis that stops answering (its host lost power or its network) must surface as an
outage within seconds, not hold a worker on a dead socket until TCP gives up: a
command waits at most `REDIS_SOCKET_TIMEOUT` seconds, a connect `REDIS_CONNECT_TIMEOUT`,
TCP keepalives probe idle sockets, and a connection idle longer than
`REDIS_HEALTH_CHECK_SECONDS` is pinged before use (kombu also drops a BRPOP whose reply
is that overdue). No retry on timeout: kombu sends a publish batch only without it.
"""

from __future__ import annotations

from typing import Any

REDIS_SOCKET_TIMEOUT = 10.0
REDIS_CONNECT_TIMEOUT = 5.0
REDIS_HEALTH_CHECK_SECONDS = 10
REDIS_CLIENT_OPTIONS: dict[str, Any] = {
    "socket_timeout": REDIS_SOCKET_TIMEOUT,
    "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
    "socket_keepalive": True,
    "health_check_interval": REDIS_HEALTH_CHECK_SECONDS,
}
