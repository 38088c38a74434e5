"""Several hosts on one machine: Linux network namespaces behind a router namespace.

A deployment as an operator who scales out builds it: a database host with its own
PostgreSQL (the system's binaries, a cluster in a temporary folder), Redis, the API and
beat; two worker hosts, each running a real `matchops worker` of this worktree; every
host on a veth of its own to a router namespace, where the faults are made. This kernel
has no netem and no iptables: a partition or a random loss is a `tc` filter into an htb
class whose only queue holds nothing (`pfifo limit 0`), on the router's side of a link,
so the hosts' own TCP sees a silent peer as it would on a real network (a drop in the
sender's own qdisc would be reported back to it and fail fast). A slow link is a relay
(tests/hosts/relay.py) in the router.

The test process stays outside every namespace: it reaches PostgreSQL and Redis through
their unix sockets in the temporary folder, and the API through a relay from a unix
socket. Everything is stopped and removed when the `deployment` block ends, whatever
happened in it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from celery import Celery
from sqlalchemy import Engine, create_engine, text

from api.auth import issue_token
from runtime.children import Child
from runtime.polling import poll_until

ROOT = Path(__file__).resolve().parents[2]
MATCHOPS = ROOT / ".venv" / "bin" / "matchops"


def _newest_postgres() -> Path:
    """The bin folder of the newest PostgreSQL the system packages installed."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _newest_postgres()
# Kept after the run (the temporary folder is not), for a failure's post-mortem.
LOGS = ROOT / ".matchops" / "test-logs" / str(os.getpid()) / "hosts"
AUTH_SECRET = "hosts-" + "0" * 40
DATABASE = "matchops"
# Namespaces and the temporary folder are named after the test process that made them:
# `matchops-hosts-<pid>-db`.
NAMESPACE_PREFIX = "matchops-hosts-"
# The servers accept other hosts only with these, as a deployment across machines must.
DB_PASSWORD = "hosts-db-secret"
REDIS_PASSWORD = "hosts-redis-secret"
# Private addresses, only ever set on the veths of the namespaces made here.
DB_ADDRESS = "10.77.1.1"
WORKER_ADDRESSES = {"a": "10.77.2.1", "b": "10.77.3.1"}
ROUTER_SIDE = {"db": "10.77.1.254", "a": "10.77.2.254", "b": "10.77.3.254"}
# htb classes on each of the router's links: 1:10 passes, 1:20 drops everything.
PASS, DROP = "1:10", "1:20"
# Filter priorities: a partition per worker host, and the random loss.
CUT_PRIORITY = {"a": 1, "b": 2}
LOSS_PRIORITY = 10
# Classic BPF, `ld rand` (SKF_AD_OFF + SKF_AD_RANDOM); below the threshold: into DROP.
BPF_RANDOM = "4,32 0 0 4294963256,53 1 0 {threshold},6 0 0 4294967295,6 0 0 0"

# The private cluster's programs run as the system's `postgres` user. The change of user
# clears the signal a child gets when this process dies; `keep` sets it again.
AS_POSTGRES = (
    "setpriv",
    "--reuid=postgres",
    "--regid=postgres",
    "--init-groups",
    "--pdeathsig=keep",
)

# What the deployment's processes read, besides the URLs.
# Short bounds, each below the next as the settings require: a lock wait below the
# silent-client bound and the soft limit, the bound below the hard limit, the hard limit
# below the redispatch wait.
BASE_SETTINGS = {
    "REDISPATCH_AFTER_SECONDS": "10",
    "TASK_SOFT_TIME_LIMIT": "6",
    "TASK_TIME_LIMIT": "8",
    # The longest a silent host keeps its transactions and locks (README, Scale out).
    "DB_SILENT_CLIENT_SECONDS": "5",
    "DB_LOCK_TIMEOUT_MS": "2000",
    "COMMIT_TRIGGERS": "true",
    "LOG_LEVEL": "INFO",
    "AUTH_SECRET": AUTH_SECRET,
}


def unavailable() -> str | None:
    """Why hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    for tool in ("ip", "tc", "setpriv", "redis-server"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL binaries in {PG_BIN}"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no `postgres` system user to run the private PostgreSQL cluster"
    if not MATCHOPS.exists():
        return f"{MATCHOPS} is missing (make .venv/.installed)"
    probe = f"matchops-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


def sh(*argv: str) -> None:
    """Run a set-up command; fail with its own message."""
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")


@dataclass
class Network:
    """The namespaces: `db`, `a`, `b` and the `router` between them."""

    prefix: str
    made: list[str] = field(default_factory=list)

    def ns(self, host: str) -> str:
        """The namespace name of `host`."""
        return f"{self.prefix}-{host}"

    def build(self) -> None:
        """Namespaces, veths, addresses, routes, and the router's drop classes."""
        for host in ("router", "db", "a", "b"):
            sh("ip", "netns", "add", self.ns(host))
            self.made.append(self.ns(host))
            self.run_in(host, "ip", "link", "set", "lo", "up")
        self.run_in("router", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        addresses = {"db": DB_ADDRESS, **WORKER_ADDRESSES}
        for host, address in addresses.items():
            link = f"r-{host}"
            sh(
                *("ip", "link", "add", link, "netns", self.ns("router"), "type", "veth"),
                *("peer", "name", "eth0", "netns", self.ns(host)),
            )
            self.run_in("router", "ip", "addr", "add", f"{ROUTER_SIDE[host]}/24", "dev", link)
            self.run_in("router", "ip", "link", "set", link, "up")
            self.run_in(host, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
            self.run_in(host, "ip", "link", "set", "eth0", "up")
            self.run_in(host, "ip", "route", "add", "default", "via", ROUTER_SIDE[host])
        for host in addresses:
            self._drop_class(f"r-{host}")

    def _drop_class(self, link: str) -> None:
        self.tc(f"qdisc add dev {link} root handle 1: htb default 10")
        for classid in (PASS, DROP):
            self.tc(f"class add dev {link} parent 1: classid {classid} htb rate 10gbit")
        self.tc(f"qdisc add dev {link} parent {DROP} handle 20: pfifo limit 0")

    def tc(self, command: str) -> None:
        """`tc` in the router, its arguments written as one line."""
        self.run_in("router", "tc", *command.split())

    def run_in(self, host: str, *argv: str) -> None:
        """A command inside `host`'s namespace."""
        sh("ip", "netns", "exec", self.ns(host), *argv)

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """`argv` as a command line that runs inside `host`'s namespace."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def cut(self, host: str) -> None:
        """Partition worker host `host`: the router drops everything to and from it."""
        prio = CUT_PRIORITY[host]
        self._drop(f"r-{host}", prio, "u32 match u32 0 0")
        self._drop("r-db", prio, f"u32 match ip src {WORKER_ADDRESSES[host]}/32")

    def heal(self, host: str) -> None:
        """End the partition of `host`."""
        for link in (f"r-{host}", "r-db"):
            self.tc(f"filter del dev {link} parent 1: prio {CUT_PRIORITY[host]}")

    def lose(self, fraction: float) -> None:
        """Drop `fraction` of the packets the router forwards, at random, on every link."""
        program = BPF_RANDOM.format(threshold=int(fraction * 2**32))
        for host in ("db", *WORKER_ADDRESSES):
            # The program holds spaces: one argument, not split.
            self.run_in(
                "router",
                *f"tc filter add dev r-{host} parent 1: protocol ip prio {LOSS_PRIORITY}".split(),
                *("bpf", "bytecode", program, "flowid", DROP),
            )

    def stop_losing(self) -> None:
        """Remove the random loss."""
        for host in ("db", *WORKER_ADDRESSES):
            self.tc(f"filter del dev r-{host} parent 1: prio {LOSS_PRIORITY}")

    def _drop(self, link: str, prio: int, match: str) -> None:
        self.tc(f"filter add dev {link} parent 1: protocol ip prio {prio} {match} flowid {DROP}")

    def remove(self) -> None:
        """Delete every namespace made (their veths go with them)."""
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], check=False)
        self.made.clear()


@dataclass
class Outcome:
    """One accepted task as `task_runs` has it."""

    task_id: str
    name: str
    state: str | None
    deliveries: int
    redispatches: int
    accepted: float
    finished: float | None

    @property
    def seconds(self) -> float | None:
        """Accepted to outcome, on the database's clock."""
        return None if self.finished is None else self.finished - self.accepted


class TaskEvents:
    """Celery task events of every worker, counted as they arrive (a thread of its own).

    Only workers that reach Redis report: a cut-off host's events never arrive.
    """

    def __init__(self, broker_url: str) -> None:
        self._app = Celery("matchops-hosts", broker=broker_url)
        self._lock = threading.Lock()
        self.received: list[tuple[float, str, str]] = []  # (time, name, kwargs repr)
        self.succeeded: list[tuple[float, str]] = []  # (time, worker hostname)
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._capture, daemon=True)
        self._ready = threading.Event()

    def __enter__(self) -> TaskEvents:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(5)

    def _capture(self) -> None:
        with self._app.connection_for_read() as connection:
            self._receiver = self._app.events.Receiver(
                connection,
                handlers={"task-received": self._on_received, "task-succeeded": self._on_done},
            )
            self._ready.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def _on_received(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.received.append((time.time(), event.get("name", ""), event.get("kwargs", "")))

    def _on_done(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.succeeded.append((time.time(), event.get("hostname", "")))

    def sweeps_of(self, topic: str, since: float, until: float | None = None) -> int:
        """`peer.sweep` deliveries of `topic` received between `since` and `until`."""
        needle = f"'topic': '{topic}'"
        end = until if until is not None else float("inf")
        with self._lock:
            return sum(
                1
                for at, name, kwargs in self.received
                if name == "peer.sweep" and needle in kwargs and since <= at <= end
            )

    def done_by_host(self, since: float) -> Counter[str]:
        """Tasks that succeeded after `since`, by worker hostname."""
        with self._lock:
            return Counter(host for at, host in self.succeeded if at >= since)


class Deployment:
    """The database host's servers, the API, beat and the workers, and their clients."""

    def __init__(self, network: Network, folder: Path, settings: Mapping[str, str]) -> None:
        self.network = network
        self.folder = folder
        self.settings = dict(settings)
        self.children: list[Child] = []
        self.workers: dict[str, Child] = {}
        self.sockets = folder / "run"
        self.engine: Engine = create_engine(
            f"postgresql+psycopg://postgres@/{DATABASE}?host={self.sockets}",
            pool_size=3,
            max_overflow=3,
        )
        self.redis_url = f"redis+socket://:{REDIS_PASSWORD}@{self.sockets}/redis.sock"
        token = issue_token(AUTH_SECRET, "hosts", ["*", "tasks:read"], 3600)
        self.http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.sockets / "api.sock")),
            base_url="http://api",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    # --- the database host ------------------------------------------------------------

    def urls(
        self, database: str = f"{DB_ADDRESS}:5432", redis: str = f"{DB_ADDRESS}:6379"
    ) -> dict[str, str]:
        """The four URLs every process of the deployment gets, through `database` and
        `redis` (HOST:PORT: the servers, or a relay in front of them)."""
        return {
            "DATABASE_URL": f"postgresql+psycopg://postgres:{DB_PASSWORD}@{database}/{DATABASE}",
            "BROKER_URL": f"redis://:{REDIS_PASSWORD}@{redis}/0",
            "RESULT_BACKEND": f"redis://:{REDIS_PASSWORD}@{redis}/1",
            "SESSION_REDIS_URL": f"redis://:{REDIS_PASSWORD}@{redis}/2",
        }

    def _env(self, name: str, urls: Mapping[str, str]) -> dict[str, str | None]:
        home = self.folder / "home" / name
        home.mkdir(parents=True, exist_ok=True)
        return {**self.settings, **urls, "MATCHOPS_HOME": str(home), "RABBITMQ_URL": None}

    def start(
        self,
        host: str,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str | None],
        as_postgres: bool = False,
    ) -> Child:
        """`argv` inside `host`, logged to the folder, stopped when the deployment ends."""
        prefix = AS_POSTGRES if as_postgres else ()
        child = Child(name, self.network.command(host, [*prefix, *argv]), LOGS / f"{name}.log", env)
        child.start()
        self.children.append(child)
        return child

    def start_relay(self, host: str, listen: str, target: str, delay: float = 0.0) -> Child:
        """A relay (tests/hosts/relay.py) inside `host` from `listen` to `target`."""
        name = f"relay-{host}-{listen.rsplit('/', 1)[-1].replace(':', '-')}"
        argv = [sys.executable, "-m", "tests.hosts.relay", listen, target, "--delay", str(delay)]
        return self.start(host, name, argv, {})

    def start_servers(self) -> None:
        """PostgreSQL and Redis on the database host; the schema migrated to head."""
        data = self.folder / "pg"
        for folder in (data, self.sockets):
            folder.mkdir()
            shutil.chown(folder, "postgres", "postgres")
        self.sockets.chmod(0o777)
        password_file = self.sockets / "pwfile"
        password_file.write_text(DB_PASSWORD + "\n")
        shutil.chown(password_file, "postgres", "postgres")
        # The test process comes in through the unix socket; the hosts with a password.
        initdb = f"-D {data} -U postgres --auth-local=trust --auth-host=scram-sha-256 "
        initdb += f"--pwfile={password_file} --no-sync -E UTF8"
        sh(*AS_POSTGRES, str(PG_BIN / "initdb"), *initdb.split())
        password_file.unlink()
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 10.77.0.0/16 scram-sha-256\n")
        options = {
            "listen_addresses": DB_ADDRESS,
            "unix_socket_directories": self.sockets,
            "fsync": "off",
            "synchronous_commit": "off",
            "max_connections": 200,
        }
        postgres = self.start(
            "db",
            "postgres",
            [str(PG_BIN / "postgres"), "-D", str(data)]
            + [arg for name, value in options.items() for arg in ("-c", f"{name}={value}")],
            {},
            as_postgres=True,
        )
        postgres.stop_signal = signal.SIGINT
        redis = f"--bind {DB_ADDRESS} --port 6379 --unixsocket {self.sockets / 'redis.sock'} "
        redis += f"--unixsocketperm 777 --requirepass {REDIS_PASSWORD} --appendonly no "
        # As README "Scale out" says to set it: drop a vanished host's connections.
        redis += "--tcp-keepalive 15"
        self.start("db", "redis", ["redis-server", *redis.split(), "--save", ""], {})
        if not poll_until(lambda: (self.sockets / ".s.PGSQL.5432").exists(), 30):
            raise RuntimeError(f"PostgreSQL did not start:\n{postgres.log_tail()}")
        sh(
            *AS_POSTGRES,
            str(PG_BIN / "createdb"),
            "-h",
            str(self.sockets),
            "-U",
            "postgres",
            DATABASE,
        )
        migrate = subprocess.run(
            self.network.command("db", [str(MATCHOPS), "migrate"]),
            env={
                **os.environ,
                **{k: v for k, v in self._env("migrate", self.urls()).items() if v is not None},
            },
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"matchops migrate failed:\n{migrate.stdout}{migrate.stderr}")

    def start_api_and_beat(self) -> None:
        """`matchops api` and `matchops beat` on the database host, and the relay from the
        test's unix socket to the API."""
        env = self._env("api", self.urls())
        api = self.start(
            "db", "api", [str(MATCHOPS), "api", "--host", DB_ADDRESS, "--port", "8000"], env
        )
        self.start_relay("db", f"unix:{self.sockets / 'api.sock'}", f"{DB_ADDRESS}:8000")
        self.start(
            "db",
            "beat",
            [str(MATCHOPS), "beat", "--schedule", str(self.folder / "beat.schedule")],
            self._env("beat", self.urls()),
        )

        def answers() -> bool:
            if not api.running():
                raise RuntimeError(f"the API exited:\n{api.log_tail()}")
            try:
                return self.http.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        if not poll_until(answers, 60, interval=0.3):
            raise RuntimeError(f"the API did not answer:\n{api.log_tail()}")

    # --- worker hosts -----------------------------------------------------------------

    def start_worker(
        self,
        host: str,
        urls: Mapping[str, str] | None = None,
        concurrency: int = 2,
        settings: Mapping[str, str] | None = None,
    ) -> Child:
        """A real `matchops worker` on `host`, ready; `urls` default to the servers, and
        `settings` replace the deployment's own for this worker."""
        node = f"worker@host-{host}"
        name = f"worker-{host}-{len(self.children)}"
        worker = self.start(
            host,
            name,
            [str(MATCHOPS), "worker", "-c", str(concurrency), "-n", node],
            {**self._env(name, urls or self.urls()), **(settings or {})},
        )
        self.workers[host] = worker

        def ready() -> bool:
            if not worker.running():
                raise RuntimeError(f"{name} exited:\n{worker.log_tail()}")
            return f"{node} ready." in worker.log_path.read_text(errors="replace")

        if not poll_until(ready, 90, interval=0.3):
            raise RuntimeError(f"{name} is not ready:\n{worker.log_tail()}")
        return worker

    def stop_worker(self, host: str) -> None:
        """Stop `host`'s worker (its pool too), killing it if it does not go in 5 s."""
        worker = self.workers.pop(host)
        worker.stop(5, group=True)

    def control(self) -> Celery:
        """A Celery app on the deployment's broker, for remote control of its workers."""
        return Celery("matchops-hosts-control", broker=self.redis_url)

    def events(self) -> TaskEvents:
        """Task events of the workers, counted while the `with` block runs."""
        return TaskEvents(self.redis_url)

    # --- work -------------------------------------------------------------------------

    def enqueue(self, name: str, **args: Any) -> str:
        """Accept a task through the API; its task id."""
        answer = self.http.post(f"/v1/tasks/{name}", json={"args": args})
        if answer.status_code != 202:
            raise AssertionError(f"{name} {args}: {answer.status_code} {answer.text}")
        return str(answer.json()["task_id"])

    def users(self, count: int) -> list[int]:
        """`count` new active users."""
        with self.engine.begin() as conn:
            rows = conn.execute(
                text(
                    "INSERT INTO users (email, display_name, role) "
                    "SELECT 'u' || g || '-' || :tag || '@example.test', 'User ' || g, 'member' "
                    "FROM generate_series(1, :count) AS g RETURNING id"
                ),
                {"count": count, "tag": uuid.uuid4().hex[:8]},
            )
            return [int(row.id) for row in rows]

    def outcomes(self, task_ids: Sequence[str]) -> dict[str, Outcome]:
        """The tasks' rows in `task_runs`."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT task_id::text AS task_id, name, state, deliveries, redispatches, "
                    "extract(epoch FROM accepted_at) AS accepted, "
                    "extract(epoch FROM finished_at) AS finished "
                    "FROM task_runs WHERE task_id = ANY(CAST(:ids AS text[]))"
                ),
                {"ids": list(task_ids)},
            )
            return {
                row.task_id: Outcome(
                    row.task_id,
                    row.name,
                    row.state,
                    row.deliveries,
                    row.redispatches,
                    float(row.accepted),
                    None if row.finished is None else float(row.finished),
                )
                for row in rows
            }

    def wait_finished(self, task_ids: Sequence[str], timeout: float) -> dict[str, Outcome]:
        """The tasks' rows once every one has an outcome, or as they are after `timeout`."""
        poll_until(
            lambda: all(o.finished is not None for o in self.outcomes(task_ids).values()),
            timeout,
            interval=0.2,
        )
        return self.outcomes(task_ids)

    def now(self) -> float:
        """The database's clock (task_runs times are on it)."""
        with self.engine.connect() as conn:
            return float(conn.scalar(text("SELECT extract(epoch FROM clock_timestamp())")) or 0)

    def close(self) -> None:
        """Stop every process (workers first, the database last) and drop the clients."""
        self.http.close()
        self.engine.dispose()
        for child in reversed(self.children):
            child.stop(10, group=True)


def remove_orphans() -> None:
    """Delete the namespaces and folders of test processes that died without removing
    theirs (killed outright); their servers died with them."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in listed.splitlines() if line.strip()]
    for name in names:
        if _orphaned(name):
            subprocess.run(["ip", "netns", "del", name], check=False)
    for folder in Path(tempfile.gettempdir()).glob(f"{NAMESPACE_PREFIX}*"):
        if _orphaned(folder.name):
            shutil.rmtree(folder, ignore_errors=True)


def _orphaned(name: str) -> bool:
    owner = name.removeprefix(NAMESPACE_PREFIX).split("-", 1)[0]
    return name.startswith(NAMESPACE_PREFIX) and owner.isdigit() and not _alive(int(owner))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def deployment(settings: Mapping[str, str] | None = None) -> Iterator[Deployment]:
    """Hosts and a deployment on them (no worker yet); all of it gone when the block ends.

    Names carry this process's id, so test runs side by side never share a namespace.
    """
    remove_orphans()
    folder = Path(tempfile.mkdtemp(prefix=f"{NAMESPACE_PREFIX}{os.getpid()}-"))
    folder.chmod(0o755)
    network = Network(f"{NAMESPACE_PREFIX}{os.getpid()}")
    built: Deployment | None = None
    try:
        network.build()
        built = Deployment(network, folder, {**BASE_SETTINGS, **(settings or {})})
        built.start_servers()
        built.start_api_and_beat()
        yield built
    finally:
        if built is not None:
            built.close()
        network.remove()
        shutil.rmtree(folder, ignore_errors=True)
