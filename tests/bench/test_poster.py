"""The load driver's HTTP client against a real HTTP/1.1 server on loopback: JSON in,
the status out, one kept-alive connection per thread, and a connection the server
closed while idle replaced without losing the call."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.client import HTTPException
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bench.poster import JsonPoster
from runtime.embedded import free_port


class _Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.bodies: list[Any] = []
        self.connections = 0
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Recorder

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_POST(self) -> None:
        assert self.headers["Content-Type"] == "application/json"
        assert self.headers["Authorization"] == "Bearer t"
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.bodies.append(body)
        status = int(self.path.rsplit("/", 1)[-1])
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
        # As a server whose keep-alive timeout ran out: the connection ends after this.
        self.close_connection = self.path.startswith("/close/")

    def send_response(self, code: int, message: str | None = None) -> None:
        if self.path.startswith("/garbage/"):
            # Not HTTP: the client cannot read an answer from this connection.
            self.wfile.write(b"NONSENSE\r\n")
            self.wfile.flush()
        super().send_response(code, message)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@contextmanager
def _server() -> Iterator[tuple[_Recorder, str]]:
    port = free_port()
    server = _Recorder(port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_posts_json_and_keeps_one_connection_per_thread() -> None:
    with (
        _server() as (server, url),
        JsonPoster(url, {"Authorization": "Bearer t"}, timeout=5) as poster,
        ThreadPoolExecutor(max_workers=4) as threads,
    ):
        statuses = list(
            threads.map(lambda n: poster.post(f"/v/{202 if n % 2 else 429}", {"n": n}), range(40))
        )
    assert statuses == [202 if n % 2 else 429 for n in range(40)]
    assert sorted(body["n"] for body in server.bodies) == list(range(40))
    assert server.connections <= 4


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    with (
        _server() as (server, url),
        JsonPoster(url, {"Authorization": "Bearer t"}, timeout=5) as poster,
    ):
        assert poster.post("/close/202", {"n": 1}) == 202
        assert poster.post("/v/202", {"n": 2}) == 202
        assert poster.post("/v/202", {"n": 3}) == 202
    assert [body["n"] for body in server.bodies] == [1, 2, 3]
    assert server.connections == 2


def test_a_broken_exchange_is_an_error_and_the_next_call_gets_a_new_connection() -> None:
    with (
        _server() as (server, url),
        JsonPoster(url, {"Authorization": "Bearer t"}, timeout=5) as poster,
    ):
        with pytest.raises(HTTPException):
            poster.post("/garbage/202", {"n": 1})
        assert poster.post("/v/202", {"n": 2}) == 202
    assert server.connections == 2


def test_a_server_that_is_not_there_is_an_error() -> None:
    with (
        JsonPoster(f"http://127.0.0.1:{free_port()}", {}, timeout=5) as poster,
        pytest.raises(ConnectionError),
    ):
        poster.post("/v/202", {})


def test_only_a_plain_http_url_is_taken() -> None:
    with pytest.raises(ValueError, match="plain http://"):
        JsonPoster("https://127.0.0.1:1", {}, timeout=5)
