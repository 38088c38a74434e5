"""A TCP relay that holds every byte for a fixed time, run inside a host's namespace.

This kernel has no netem, so a slow link is made by relaying each connection through a
process that delivers what it reads `--delay` seconds later, in order, in both
directions. With no delay it is a plain forwarder, also from a unix socket: the test
process, outside every host, reaches the API inside the database host through one.

    python -m tests.hosts.relay LISTEN TARGET [--delay SECONDS]

LISTEN is `HOST:PORT` or `unix:PATH`; TARGET is `HOST:PORT`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import socket
import threading
import time

CHUNK = 65536


def listener(spec: str) -> socket.socket:
    """A listening socket for `HOST:PORT` or `unix:PATH`."""
    if spec.startswith("unix:"):
        path = spec.removeprefix("unix:")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(128)
        return server
    host, port = spec.rsplit(":", 1)
    return socket.create_server((host, int(port)), backlog=128)


def _read(source: socket.socket, held: queue.Queue[tuple[float, bytes]], delay: float) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(CHUNK):
            held.put((time.monotonic() + delay, data))
    held.put((time.monotonic() + delay, b""))


def _write(sink: socket.socket, held: queue.Queue[tuple[float, bytes]]) -> None:
    with contextlib.suppress(OSError):
        while True:
            due, data = held.get()
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            if not data:
                sink.shutdown(socket.SHUT_WR)
                return
            sink.sendall(data)


def _relay(client: socket.socket, target: tuple[str, int], delay: float) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threads = []
    for source, sink in ((client, upstream), (upstream, client)):
        held: queue.Queue[tuple[float, bytes]] = queue.Queue()
        threads.append(threading.Thread(target=_read, args=(source, held, delay), daemon=True))
        threads.append(threading.Thread(target=_write, args=(sink, held), daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    upstream.close()


def main() -> None:
    """Accept connections on LISTEN forever, each relayed to TARGET."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("listen")
    parser.add_argument("target")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds, each direction")
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    server = listener(args.listen)
    while True:
        client, _ = server.accept()
        if client.family != socket.AF_UNIX:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(
            target=_relay, args=(client, (host, int(port)), args.delay), daemon=True
        ).start()


if __name__ == "__main__":
    main()
