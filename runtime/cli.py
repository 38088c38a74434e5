"""The `matchops` command: every way of running matchops (see README, Two commands).

Each subcommand reads the environment (DATABASE_URL, BROKER_URL, RESULT_BACKEND,
AUTH_SECRET, ...). Where DATABASE_URL or BROKER_URL is unset, `run` and `demo` start
embedded servers under `.matchops/` (runtime.embedded); every other subcommand that needs
PostgreSQL or Redis uses the ones running there, or says how to start them.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

import sqlalchemy.exc
from pydantic import ValidationError

from core.errors import DomainError, Overloaded, Unavailable
from core.outages import BROKER, DATABASE, RESULT_BACKEND, TRANSIENT_ERRORS, component_of
from core.settings import MissingSetting, describe_invalid, get_settings
from core.task_store import TaskState
from domain.peer.stats import DEFAULT_WINDOW_SECONDS
from runtime import credentials, embedded
from runtime.polling import poll_until

DEFAULT_API_PORT = 8000
DEFAULT_FLOWER_PORT = 5555
DEFAULT_TOKEN_TTL = 3600
UNREACHABLE = 3
# The task's queue is behind (MAX_QUEUE_WAIT_SECONDS): nothing was enqueued, try later.
OVERLOADED = 4


EXIT_CODES = (
    "Exit status: 0 answered (task accepted, running or succeeded); 1 the API refused "
    "the call or the task failed; 2 a usage mistake, or no servers to use (neither "
    "DATABASE_URL and BROKER_URL set nor embedded servers running); 3 the database, broker "
    "or result backend is unreachable; 4 the task's queue is behind "
    "(MAX_QUEUE_WAIT_SECONDS), nothing was enqueued: try again after the seconds the "
    "message names."
)


class UsageError(Exception):
    """A command line the user can fix; the message says what and how."""


# --- argument parsing ---------------------------------------------------------------------


def parse_task_args(pairs: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs → task kwargs; values are JSON where they parse, else strings.

    `--arg user_id=42` gives 42, `--arg confirmed=true` gives True, `--arg topic=graphs`
    gives "graphs"; quote a number to keep it a string: `--arg code='"42"'`.
    """
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, equals, raw = pair.partition("=")
        key = key.strip()
        if not equals:
            raise UsageError(f"--arg {pair!r}: expected KEY=VALUE, for example --arg user_id=42")
        if not key:
            raise UsageError(f"--arg {pair!r}: the key before '=' is empty")
        if key in parsed:
            raise UsageError(f"--arg {key}: given twice; pass each argument once")
        try:
            parsed[key] = json.loads(raw)
        except ValueError:
            parsed[key] = raw
    return parsed


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 65535")
    return value


def _seconds(text: str) -> float:
    # Only the syntax is checked here: the bounds are the API's, with the API's message.
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand (the compose test reads its subcommand names)."""
    parser = argparse.ArgumentParser(
        prog="matchops",
        description="Run matchops: migrations, API, workers, beat, Flower, and task calls.",
        epilog="Without DATABASE_URL / BROKER_URL: run and demo start embedded servers under "
        ".matchops/, the other commands use the ones running there.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("migrate", help="alembic upgrade head on DATABASE_URL")

    api = commands.add_parser("api", help="the HTTP API")
    api.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    api.add_argument("--port", type=_port, default=DEFAULT_API_PORT, help="default 8000")

    worker = commands.add_parser(
        "worker",
        help="a Celery worker of this app (all queues unless -Q)",
        description="Any option after `worker` goes to `celery worker` "
        "(for example -c 4, -Q sweeps,maintenance, -n name@%%h).",
    )
    worker.add_argument("celery_args", nargs=argparse.REMAINDER, metavar="CELERY WORKER ARGS")

    beat = commands.add_parser("beat", help="the beat scheduler (beat_schedule.py)")
    beat.add_argument(
        "--schedule",
        type=Path,
        default=embedded.DEFAULT_HOME / "celerybeat-schedule",
        help="where beat remembers last run times (default .matchops/celerybeat-schedule)",
    )

    flower = commands.add_parser("flower", help="Flower, basic auth from FLOWER_BASIC_AUTH")
    flower.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    flower.add_argument("--port", type=_port, default=DEFAULT_FLOWER_PORT, help="default 5555")

    token = commands.add_parser("token", help="print a signed API token")
    token.add_argument("--sub", required=True, help="the caller's name (claim `sub`)")
    token.add_argument(
        "--scope",
        action="append",
        metavar="PATTERN",
        help="task-name pattern the token may enqueue, e.g. 'peer.*'; repeatable (default '*')",
    )
    token.add_argument(
        "--ttl", type=_positive_int, default=DEFAULT_TOKEN_TTL, help="seconds (default 3600)"
    )

    enqueue = commands.add_parser(
        "enqueue",
        help="enqueue a task and print the JSON answer",
        description=EXIT_CODES,
    )
    enqueue.add_argument("name", help="task name, e.g. peer.request")
    enqueue.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task argument; VALUE is JSON when it parses (42, true, [1,2]), else a string",
    )
    enqueue.add_argument("--wait", type=_seconds, help="wait up to this many seconds (max 30)")
    enqueue.add_argument("--idempotency-key", help="the same key enqueues at most once")
    enqueue.add_argument("--countdown", type=_seconds, help="run no sooner than this many seconds")

    status = commands.add_parser(
        "status", help="print a task's JSON status", description=EXIT_CODES
    )
    status.add_argument("task_id")

    pools = commands.add_parser(
        "pools", help="per-pool peer figures: waiting, oldest wait, time to match, expiry rate"
    )
    pools.add_argument(
        "--window",
        type=_positive_int,
        default=DEFAULT_WINDOW_SECONDS,
        help="seconds of matches and expiries to count (default 3600)",
    )
    pools.add_argument("--json", action="store_true", help="print JSON instead of a table")

    audit = commands.add_parser("audit", help="print what a task changed (its audit rows)")
    audit.add_argument("task_id")

    commands.add_parser(
        "stop",
        help="stop a running `matchops run` / `matchops demo` and the embedded servers",
    )

    for name, what in (
        ("run", "the whole local stack in the foreground, with a demo workload"),
        ("demo", "the local stack, one finite demo end to end, then exit"),
    ):
        stack = commands.add_parser(name, help=what)
        stack.add_argument(
            "--api-port", type=_port, default=DEFAULT_API_PORT, help="default 8000 (0: any)"
        )
        stack.add_argument(
            "--flower-port", type=_port, default=DEFAULT_FLOWER_PORT, help="default 5555 (0: any)"
        )
    return parser


def subcommand_names() -> list[str]:
    """Names of every `matchops` subcommand."""
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


# --- commands -----------------------------------------------------------------------------
# Each command imports the parts it runs: importing them all (the API, Celery's command
# line, uvicorn, the demo) would double the start of every `matchops` call, for
# commands like `status` that use none of them.


def cmd_migrate(_: argparse.Namespace) -> int:
    """`alembic upgrade head`."""
    from runtime.migrate import upgrade_head

    embedded.attach()
    upgrade_head(get_settings().db_url)
    print("database schema is at head")
    return 0


# The event loop and HTTP parser the API runs on: uvloop and httptools (pyproject.toml).
API_LOOP = "uvloop"
API_HTTP = "httptools"


def cmd_api(args: argparse.Namespace) -> int:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    # Before looking for servers: a missing secret is the refusal to show first.
    os.environ["AUTH_SECRET"] = _auth_secret()
    embedded.attach()
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        # Named rather than left to uvicorn's "auto", which falls back to asyncio's loop
        # and the pure-Python h11 without a word when these are missing; on them the API
        # answers far more calls per core (docs/benchmarks.md, Enqueue).
        loop=API_LOOP,
        http=API_HTTP,
        log_level=get_settings().log_level.lower(),
    )
    return 0


def _has_option(argv: Sequence[str], short: str, long: str) -> bool:
    return any(arg == long or arg.startswith(long + "=") or arg.startswith(short) for arg in argv)


def worker_argv(celery_args: Sequence[str]) -> list[str]:
    """`celery worker` arguments: the caller's, plus every queue and INFO logs by default."""
    from celeryconfig import QUEUE_NAMES

    argv = ["worker", *celery_args]
    if not _has_option(celery_args, "-Q", "--queues"):
        argv += ["-Q", ",".join(QUEUE_NAMES)]
    if not _has_option(celery_args, "-l", "--loglevel"):
        argv += ["-l", get_settings().log_level]
    return argv


def _celery(argv: list[str]) -> int:
    from celery.bin.celery import celery

    # standalone mode: celery's own usage errors are printed as such, not as tracebacks.
    try:
        celery.main(
            args=["-A", "workers.app", *argv],
            prog_name="matchops",
            auto_envvar_prefix="CELERY",
            standalone_mode=True,
        )
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """A Celery worker in this process."""
    embedded.attach()
    return _celery(worker_argv(args.celery_args))


def cmd_beat(args: argparse.Namespace) -> int:
    """The beat scheduler in this process."""
    embedded.attach()
    schedule: Path = args.schedule
    schedule.parent.mkdir(parents=True, exist_ok=True)
    return _celery(["beat", "--schedule", str(schedule), "-l", get_settings().log_level])


def cmd_flower(args: argparse.Namespace) -> int:
    """Flower with basic auth; it also serves Prometheus metrics at /metrics."""
    auth = os.environ.get("FLOWER_BASIC_AUTH", "")
    if not auth:
        raise UsageError(
            "FLOWER_BASIC_AUTH is not set. Export FLOWER_BASIC_AUTH=user:password; "
            "Flower shows task arguments and can revoke tasks, so it never runs open."
        )
    try:
        credentials.parse_basic_auth(auth)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    embedded.attach()
    # Flower reads FLOWER_BASIC_AUTH itself, which keeps the password off the command line.
    return _celery(["flower", f"--address={args.host}", f"--port={args.port}"])


def cmd_token(args: argparse.Namespace) -> int:
    """Print a signed API token."""
    from api.auth import issue_token

    secret = _auth_secret()
    max_ttl = get_settings().max_token_ttl_seconds
    if args.ttl > max_ttl:
        raise UsageError(
            f"--ttl: at most {max_ttl} seconds (MAX_TOKEN_TTL_SECONDS), got {args.ttl}"
        )
    print(issue_token(secret, args.sub, args.scope or ["*"], args.ttl))
    return 0


def _auth_secret() -> str:
    """AUTH_SECRET, else the local stack's secret (`.matchops/auth-secret`), else refuse."""
    secret = os.environ.get("AUTH_SECRET") or credentials.local_auth_secret()
    if not secret:
        raise MissingSetting(
            "AUTH_SECRET is not set. Export AUTH_SECRET=... (the API's signing secret), "
            "or start the local stack once with `make run`, which generates one."
        )
    if not os.environ.get("AUTH_SECRET"):
        print("AUTH_SECRET is unset: using the local stack's secret.", file=sys.stderr)
    return secret


def _cli_caller() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def cmd_enqueue(args: argparse.Namespace) -> int:
    """Enqueue through the same code path as `POST /v1/tasks/{name}`."""
    task_args = parse_task_args(args.arg)
    embedded.attach()
    from submission.service import enqueue_task, prepare_task

    _refuse_without_broker()
    caller = _cli_caller()

    def enqueue() -> dict[str, Any]:
        task = prepare_task(
            args.name,
            task_args,
            caller=caller,
            idempotency_key=args.idempotency_key,
            countdown=args.countdown,
            wait=args.wait,
        )
        _refuse_when_behind(task.name)
        return enqueue_task(task)

    answer = _api_call(enqueue)
    if args.wait is not None:
        answer = _api_call(lambda: _await_outcome(answer["task_id"], caller, args.wait))
    return _print_answer(answer)


def _refuse_without_broker() -> None:
    """As the API does: while the broker refuses, an enqueue is a 503, not a PENDING task
    that would only wait in PostgreSQL."""
    from api.health import check_broker
    from core.dispatch import BROKER_PROBE_ERRORS

    try:
        check_broker()
    except BROKER_PROBE_ERRORS:
        raise ApiRefusal(_unavailable(BROKER), UNREACHABLE) from None


def _refuse_when_behind(name: str) -> None:
    """As the API does: with MAX_QUEUE_WAIT_SECONDS set, an enqueue into a queue whose
    oldest unstarted task waited longer, or where a task accepted now would wait longer
    at the queue's pace, is refused, recording nothing.
    One read of the backlogs, and the pace that read measured: the command enqueues once."""
    from core.db import get_bookkeeping_engine
    from submission.backlog import read_backlogs, refusal
    from workers.specs import queue_of

    limit = get_settings().max_queue_wait_seconds
    if limit is None:
        return
    queue = queue_of(name)
    with get_bookkeeping_engine().connect() as connection:
        seen = read_backlogs(connection, limit).get(queue)
    if seen is None:
        return
    if (overloaded := refusal(queue, seen, limit, pace=seen.pace)) is not None:
        raise overloaded


def _await_outcome(task_id: str, caller: str, seconds: float) -> dict[str, Any]:
    from submission.service import describe_task, finished_among

    poll_until(lambda: finished_among([task_id]), seconds, 0.05)
    return describe_task(task_id, reader=caller, may_read_all=True)


def cmd_status(args: argparse.Namespace) -> int:
    """Print what `GET /v1/tasks/{task_id}` answers (for every task: an operator's view)."""
    embedded.attach()
    from submission.service import describe_task

    return _print_answer(
        _api_call(lambda: describe_task(args.task_id, reader=_cli_caller(), may_read_all=True))
    )


def _print_answer(answer: dict[str, Any]) -> int:
    print(json.dumps(answer, indent=2))
    return 1 if answer.get("state") == TaskState.FAILURE else 0


def cmd_pools(args: argparse.Namespace) -> int:
    """Print every active pool's figures."""
    embedded.attach()
    from core.db import session_factory
    from domain.peer.stats import pool_figures
    from runtime.pool_table import pool_table

    with session_factory().begin() as session:
        figures = pool_figures(session, args.window)
    if args.json:
        rows = [{**asdict(pool), "expiry_rate": pool.expiry_rate} for pool in figures]
        print(json.dumps(rows, indent=2))
    else:
        print(pool_table(figures) if figures else "no pool has waiting or recent requests")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Print the audit rows of one task as JSON."""
    embedded.attach()
    from core.audit import audit_of_task
    from core.db import session_factory

    with session_factory().begin() as session:
        print(json.dumps(audit_of_task(session, args.task_id), indent=2))
    return 0


class ApiRefusal(Exception):
    """The API refused a call; carries the JSON body to print and the exit status."""

    def __init__(self, body: dict[str, Any], exit_status: int = 1) -> None:
        super().__init__(body)
        self.body = body
        self.exit_status = exit_status


def _api_call(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    from api.errors import api_error

    # The printed JSON answer says what went wrong; the API's warnings about it would
    # only repeat it with a driver traceback.
    logging.basicConfig(level=logging.ERROR)
    try:
        return call()
    except DomainError as error:
        # The body the API answers; an outage exits as any outage does, a queue that is
        # behind with its own status.
        exit_status = {Unavailable: UNREACHABLE, Overloaded: OVERLOADED}.get(type(error), 1)
        raise ApiRefusal(api_error(error).body(), exit_status) from None
    except TRANSIENT_ERRORS as error:
        component = component_of(error) or "broker"
        raise ApiRefusal(_unavailable(component), UNREACHABLE) from None


def _unavailable(component: str) -> dict[str, Any]:
    from api.errors import unavailable

    return unavailable(component).body()


def cmd_run(args: argparse.Namespace) -> int:
    """The local stack in the foreground until Ctrl-C."""
    from runtime.stack import run_forever

    return run_forever(args.api_port, args.flower_port)


def cmd_demo(args: argparse.Namespace) -> int:
    """The local stack, one demo, a summary; exit status says whether it all worked."""
    from runtime.stack import run_demo

    return run_demo(args.api_port, args.flower_port)


def cmd_stop(_: argparse.Namespace) -> int:
    """Stop the local stack, then any embedded servers still running."""
    from runtime.stopping import stop_all

    stop_all(print)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "migrate": cmd_migrate,
    "api": cmd_api,
    "worker": cmd_worker,
    "beat": cmd_beat,
    "flower": cmd_flower,
    "token": cmd_token,
    "enqueue": cmd_enqueue,
    "status": cmd_status,
    "pools": cmd_pools,
    "audit": cmd_audit,
    "run": cmd_run,
    "demo": cmd_demo,
    "stop": cmd_stop,
}


SETTING_OF = {DATABASE: "DATABASE_URL", RESULT_BACKEND: "RESULT_BACKEND"}


def describe_outage(exc: Exception) -> str:
    """One line naming what could not be reached and the driver's reason."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        reason = str(exc.orig).strip().splitlines()[-1] if exc.orig else str(exc)
    else:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    component = component_of(exc) or BROKER
    return f"cannot reach the {component} ({SETTING_OF.get(component, 'BROKER_URL')}): {reason}"


def _exit_on_signal(signum: int, _frame: Any) -> NoReturn:
    # Turn SIGTERM and SIGHUP (a closed terminal) into a normal exit, so the local stack
    # stops the embedded servers it started. The long-running commands (celery, uvicorn,
    # flower, the local stack while it serves) install their own handlers.
    raise SystemExit(128 + signum)


def parse_command_line(argv: Sequence[str]) -> argparse.Namespace:
    """The subcommand and its options; `worker` hands everything after it to celery."""
    if argv[:1] == ["worker"]:
        # argparse would reorder or reject celery's own options; they pass through verbatim.
        return argparse.Namespace(command="worker", celery_args=list(argv[1:]))
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `matchops` console script."""
    args = parse_command_line(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    try:
        return COMMANDS[args.command](args)
    except ApiRefusal as refusal:
        print(json.dumps(refusal.body, indent=2))
        return refusal.exit_status
    except (UsageError, MissingSetting, embedded.EmbeddedServerError) as exc:
        print(f"matchops {args.command}: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        # Checked once, when the settings are first read: which variable, and why.
        print(
            f"matchops {args.command}: invalid settings:\n{describe_invalid(exc)}", file=sys.stderr
        )
        return 2
    except TRANSIENT_ERRORS as exc:
        print(f"matchops {args.command}: {describe_outage(exc)}", file=sys.stderr)
        return UNREACHABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
