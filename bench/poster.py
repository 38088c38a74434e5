"""A load driver's HTTP client: JSON posts over one keep-alive connection per thread.

The driver shares the machine's cores with the stack it drives, so what it spends per
call is taken from the stack. httpx, a full client (its own connection pool, request and
response models, h11), costs the driving process several times what the standard
library's `http.client` does for the same post; this is that, and no more: one
connection per thread, JSON in, the status out.
"""

from __future__ import annotations

import json
import threading
from http.client import HTTPConnection
from typing import Any
from urllib.parse import urlsplit


class JsonPoster:
    """Posts JSON to one HTTP server from any number of threads."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout: float) -> None:
        address = urlsplit(base_url)
        if address.scheme != "http" or address.hostname is None:
            raise ValueError(f"a plain http:// URL with a host, not {base_url!r}")
        self._host = address.hostname
        self._port = address.port or 80
        self._headers = {**headers, "Content-Type": "application/json"}
        self._timeout = timeout
        self._local = threading.local()
        self._opened: list[HTTPConnection] = []
        self._lock = threading.Lock()

    def post(self, path: str, body: Any) -> int:
        """POST `body` as JSON to `path`; the answer's status (its body is read and
        dropped, so the connection can carry the next call)."""
        data = json.dumps(body).encode()
        connection, fresh = self._connection()
        try:
            return self._exchange(connection, path, data)
        except ConnectionError:
            if fresh:
                raise
        # A connection that waited idle may have been closed by the server (its
        # keep-alive timeout): once more, on a new one. A fresh one failing is news.
        return self._exchange(self._connection()[0], path, data)

    def close(self) -> None:
        """Close every connection any thread opened."""
        with self._lock:
            for connection in self._opened:
                connection.close()
            self._opened.clear()

    def __enter__(self) -> JsonPoster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _exchange(self, connection: HTTPConnection, path: str, data: bytes) -> int:
        try:
            connection.request("POST", path, body=data, headers=self._headers)
            answer = connection.getresponse()
            answer.read()
        except BaseException:
            # Whatever broke the exchange left the connection mid-way: the next call
            # gets a new one.
            self._forget(connection)
            raise
        return answer.status

    def _forget(self, connection: HTTPConnection) -> None:
        connection.close()
        self._local.connection = None
        with self._lock:
            self._opened.remove(connection)

    def _connection(self) -> tuple[HTTPConnection, bool]:
        """This thread's connection, and whether it was opened for this call."""
        connection: HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, False
        connection = HTTPConnection(self._host, self._port, timeout=self._timeout)
        with self._lock:
            self._opened.append(connection)
        self._local.connection = connection
        return connection, True
