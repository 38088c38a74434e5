"""The `matchops` command line: argument parsing and errors a user can act on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from api.auth import decode_token, issue_token
from runtime.children import Child
from runtime.cli import (
    UsageError,
    parse_command_line,
    parse_task_args,
    subcommand_names,
    worker_argv,
)
from runtime.credentials import local_auth_secret
from runtime.embedded import free_port
from runtime.polling import poll_until
from tests.runtime.commands import MATCHOPS, matchops
from tests.support import DOCUMENTED_QUEUES

CONTRACT_SUBCOMMANDS = {
    "migrate",
    "api",
    "worker",
    "beat",
    "flower",
    "token",
    "enqueue",
    "status",
    "run",
    "demo",
}
# Operators' views of the data: pool fairness figures and a task's audit rows.
OPERATOR_SUBCOMMANDS = {"pools", "audit"}


def test_every_contract_subcommand_exists():
    # `stop` is one more, for the local stack.
    assert set(subcommand_names()) == CONTRACT_SUBCOMMANDS | OPERATOR_SUBCOMMANDS | {"stop"}


def test_task_args_are_json_where_they_parse():
    parsed = parse_task_args(
        ["user_id=42", "topic=graphs", "confirmed=true", "ids=[1, 2]", "note=a=b", 'code="42"']
    )
    assert parsed == {
        "user_id": 42,
        "topic": "graphs",
        "confirmed": True,
        "ids": [1, 2],
        "note": "a=b",
        "code": "42",
    }


@pytest.mark.parametrize(
    ("pair", "says"),
    [
        ("user_id", "expected KEY=VALUE"),
        ("=42", "the key before '=' is empty"),
    ],
)
def test_malformed_task_args_say_what_is_wrong(pair, says):
    with pytest.raises(UsageError, match=says):
        parse_task_args([pair])


def test_a_task_arg_given_twice_is_refused():
    with pytest.raises(UsageError, match="user_id: given twice"):
        parse_task_args(["user_id=1", "user_id=2"])


def test_worker_options_pass_through_in_order():
    args = parse_command_line(["worker", "-c", "4", "--loglevel", "DEBUG", "-Q", "sweeps"])
    assert args.celery_args == ["-c", "4", "--loglevel", "DEBUG", "-Q", "sweeps"]


def test_worker_consumes_every_queue_unless_told():
    default = worker_argv(["-c", "2"])
    assert default[:3] == ["worker", "-c", "2"]
    queues = default[default.index("-Q") + 1].split(",")
    assert set(queues) == DOCUMENTED_QUEUES
    assert worker_argv(["-Q", "sweeps", "-l", "DEBUG"]) == ["worker", "-Q", "sweeps", "-l", "DEBUG"]
    assert "-Q" not in worker_argv(["--queues=events"])


def test_bad_arg_syntax_exits_2_naming_the_arg():
    done = matchops("enqueue", "peer.request", "--arg", "user_id")
    assert done.returncode == 2
    assert "--arg 'user_id': expected KEY=VALUE" in done.stderr
    assert "Traceback" not in done.stderr


def test_token_round_trip():
    done = matchops(
        "token",
        "--sub",
        "alice",
        "--scope",
        "peer.*",
        "--scope",
        "mentorship.rank",
        "--ttl",
        "120",
        env={"AUTH_SECRET": "a-test-secret-of-32-bytes-or-more!!"},
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    caller = decode_token("a-test-secret-of-32-bytes-or-more!!", token, 3600)
    assert caller.sub == "alice"
    assert caller.scopes == ("peer.*", "mentorship.rank")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 120


def test_token_without_any_secret_names_auth_secret(tmp_path):
    done = matchops(
        "token", "--sub", "alice", env={"MATCHOPS_HOME": str(tmp_path)}, unset=("AUTH_SECRET",)
    )
    assert done.returncode == 2
    assert "AUTH_SECRET is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_token_ttl_must_be_positive():
    done = matchops("token", "--sub", "alice", "--ttl", "0", env={"AUTH_SECRET": "x" * 32})
    assert done.returncode == 2
    assert "'0' must be greater than 0" in done.stderr


def test_api_refuses_to_start_without_auth_secret_before_starting_any_server(tmp_path):
    done = matchops(
        "api",
        env={"MATCHOPS_HOME": str(tmp_path)},
        unset=("AUTH_SECRET", "DATABASE_URL", "BROKER_URL", "RESULT_BACKEND"),
    )
    assert done.returncode == 2
    assert "AUTH_SECRET is not set" in done.stderr
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir()), "embedded servers were started for nothing"


@contextlib.contextmanager
def local_api(home: Path) -> Iterator[Child]:
    """`matchops api` on the local stack's secret under `home`, once it answers an
    authenticated call with 200."""
    secret = local_auth_secret(home, create=True)
    assert secret is not None
    token = issue_token(secret, "local", ["*"], 60)
    port = free_port()
    api = Child(
        "api",
        [MATCHOPS, "api", "--port", str(port)],
        home / "logs" / "api.log",
        {"AUTH_SECRET": None, "MATCHOPS_HOME": str(home)},
    )
    api.start()
    replies: list[httpx.Response] = []

    def answered() -> bool:
        assert api.running(), "api did not start"
        with contextlib.suppress(httpx.TransportError):
            replies.append(
                httpx.get(
                    f"http://127.0.0.1:{port}/v1/tasks",
                    headers={"Authorization": f"Bearer {token}"},
                )
            )
        return bool(replies)

    try:
        assert poll_until(answered, 30, 0.2), "api did not start"
        assert replies[0].status_code == 200
        yield api
    finally:
        api.stop(30)


def test_api_signs_with_the_local_stack_secret_when_auth_secret_is_unset(tmp_path):
    with local_api(tmp_path) as api:
        # Said on stderr, which Python writes out line by line, before the API answers.
        assert "using the local stack's secret" in api.log_path.read_text()


def test_api_serves_on_uvloop_and_httptools(tmp_path):
    # The enqueue endpoint's figures are measured on them; uvicorn's default would fall
    # back to asyncio's loop and h11 without a word if they were missing.
    with local_api(tmp_path) as api:
        loaded = Path(f"/proc/{api.pid}/maps").read_text()
    assert "/uvloop/loop." in loaded
    assert "/httptools/parser/parser." in loaded


def test_flower_refuses_to_start_without_basic_auth():
    done = matchops("flower", unset=("FLOWER_BASIC_AUTH",))
    assert done.returncode == 2
    assert "FLOWER_BASIC_AUTH is not set" in done.stderr


def test_flower_basic_auth_must_be_user_colon_password():
    done = matchops("flower", env={"FLOWER_BASIC_AUTH": "admin"})
    assert done.returncode == 2
    assert "FLOWER_BASIC_AUTH must look like user:password" in done.stderr


def test_unknown_subcommand_is_a_usage_error():
    done = matchops("teleport")
    assert done.returncode == 2
    assert "invalid choice: 'teleport'" in done.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TASK_MAX_DELIVERIES": "50"}, "TASK_MAX_DELIVERIES: Input should be less than"),
        (
            {"TASK_SOFT_TIME_LIMIT": "1", "TASK_TIME_LIMIT": "2"},
            "DB_LOCK_TIMEOUT_MS (3000) must be below TASK_SOFT_TIME_LIMIT (1)",
        ),
    ],
)
def test_settings_that_do_not_fit_stop_a_command_with_what_to_change(env, named):
    done = matchops("worker", "-Q", "celery", env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("matchops worker: invalid settings:\n"), done.stderr
    assert named in done.stderr
    assert "Traceback" not in done.stderr
