"""Tracing, opt-in: one trace per accepted task, from the HTTP request to the events it caused.

Off unless the standard OpenTelemetry environment names a traces exporter or an OTLP
endpoint (`Settings.trace_exporters`). Off, nothing of the SDK or of the instrumentations
is imported or set up, the global tracer provider stays the API's no-op one, and every
hook below returns at its first test.

On, `configure` (once per process at start-up: the API, a worker before its pool forks,
beat) sets up the SDK, and one accepted task makes one trace:

    POST /v1/tasks/NAME        FastAPI's own telemetry; continues the caller's traceparent
      record NAME              `recording`: the task_runs insert; its context is stored
                               with the row (task_runs.traceparent)
        dispatch NAME          `dispatching`: every publish, the first and each redispatch
          apply_async/NAME     Celery's instrumentation: the context rides in the message
                               headers, so a redelivered message carries it again
            run/NAME           the worker
              SELECT/INSERT …  its statements (SQLAlchemy's instrumentation)
              apply_async/…    the follow-ups its commit sends (a sweep, the relay)
            publish EVENT      `relaying`: each outbox row its transactions wrote carries
                               the run's context (outbox.traceparent); the relay sends it
                               on as the message's `traceparent` header

Statements become spans only inside a traced operation: the dispatchers' and the metrics'
polling never makes a trace of its own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy import Connection, Engine, bindparam, event, func, select
from sqlalchemy.orm import Session, SessionTransaction

from core.settings import Settings, get_settings
from core.task_store import TASK_TABLE

TRACEPARENT = "traceparent"
# What a traced transaction declares its context in; outbox rows default to it (0008).
TRANSACTION_SETTING = "matchops.traceparent"
EVENTS_EXCHANGE = "matching.events"

_W3C = TraceContextTextMapPropagator()
_OFF: AbstractContextManager[None] = nullcontext()
_DECLARE_CONTEXT = select(func.set_config(TRANSACTION_SETTING, bindparam("traceparent"), True))


@dataclass(frozen=True)
class _Tracing:
    provider: Any  # the SDK's TracerProvider, imported only when tracing is on
    tracer: trace.Tracer


# Set by `configure` when tracing is on: the one switch every hook tests.
_on: _Tracing | None = None


def enabled() -> bool:
    """Whether this process traces."""
    return _on is not None


def configure(role: str) -> bool:
    """Set tracing up for this process (`api`, `worker`, `beat`) when the environment asks
    for it; whether it is on. A second call changes nothing."""
    global _on
    settings = get_settings()
    if _on is None and settings.trace_exporters:
        _on = _set_up(settings, role)
    return _on is not None


def flush() -> None:
    """Export the spans still queued: a worker's pool process leaves without atexit."""
    if _on is not None:
        _on.provider.force_flush()


def trace_engine(engine: Engine) -> Engine:
    """`engine`, whose statements become spans of the traced operation running them (on)."""
    if _on is not None:
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
        from opentelemetry.metrics import NoOpUpDownCounter

        statements = _StatementsOfTracedWork(
            _on.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
        )
        EngineTracer(statements, engine, NoOpUpDownCounter("db.client.connections.usage"))
    return engine


def recording(task_name: str, task_id: str) -> AbstractContextManager[str | None]:
    """A span around recording the task; yields its traceparent to store with the task
    (None while tracing is off)."""
    if _on is None:
        return _OFF
    return _recording(_on.tracer, task_name, task_id)


def dispatching(
    task_name: str, task_id: str, traceparent: str | None
) -> AbstractContextManager[None]:
    """A span around one publish of the task, in the trace stored with it."""
    if _on is None:
        return _OFF
    return _dispatching(_on.tracer, task_name, task_id, traceparent)


def relaying(
    event_type: str, event_id: object, traceparent: str | None
) -> AbstractContextManager[dict[str, str] | None]:
    """A span around publishing one event, in the trace of the task that wrote it; yields
    the message headers that carry it on (None while tracing is off)."""
    if _on is None:
        return _OFF
    return _relaying(_on.tracer, event_type, str(event_id), traceparent)


def _set_up(settings: Settings, role: str) -> _Tracing:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": settings.otel_service_name, "matchops.role": role})
    provider = TracerProvider(resource=resource)
    for name in settings.trace_exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)
    if role in ("worker", "beat"):
        # Publishing injects the context into the message headers; a worker's run
        # continues it.
        CeleryInstrumentor().instrument(tracer_provider=provider)
    if role == "worker":
        event.listen(Session, "after_begin", _declare_trace_context)
    return _Tracing(provider, provider.get_tracer("matchops"))


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    import requests
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    session = requests.Session()
    # A pool process forked later must not share the parent's open connection to the
    # collector; closed in the child, the session opens its own.
    os.register_at_fork(after_in_child=session.close)
    return OTLPSpanExporter(session=session)


class _StatementsOfTracedWork:
    """The tracer the SQLAlchemy instrumentation gets: a statement's span only inside a
    traced operation (a request, a task run), never a trace of its own."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_span(
        self, name: str, context: otel_context.Context | None = None, **options: Any
    ) -> trace.Span:
        if not trace.get_current_span(context).get_span_context().is_valid:
            return trace.INVALID_SPAN
        return self._tracer.start_span(name, context, **options)


def _declare_trace_context(
    session: Session, transaction: SessionTransaction, connection: Connection
) -> None:
    # Every outbox row this transaction writes, by any statement, defaults to it.
    span = trace.get_current_span()
    if span.get_span_context().is_valid:
        connection.execute(_DECLARE_CONTEXT, {"traceparent": _traceparent_of(span)})


def _traceparent_of(span: trace.Span) -> str | None:
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT)


def _parent(traceparent: str | None) -> otel_context.Context | None:
    # No stored context: the current one (the relay's own run, say) is the parent.
    return _W3C.extract({TRACEPARENT: traceparent}) if traceparent else None


@contextlib.contextmanager
def _recording(tracer: trace.Tracer, task_name: str, task_id: str) -> Iterator[str | None]:
    with tracer.start_as_current_span(
        f"record {task_name}",
        attributes={
            "db.system.name": "postgresql",
            "db.operation.name": "INSERT",
            "db.collection.name": TASK_TABLE,
            "matchops.task.name": task_name,
            "matchops.task.id": task_id,
        },
    ) as span:
        yield _traceparent_of(span)


@contextlib.contextmanager
def _dispatching(
    tracer: trace.Tracer, task_name: str, task_id: str, traceparent: str | None
) -> Iterator[None]:
    with tracer.start_as_current_span(
        f"dispatch {task_name}",
        context=_parent(traceparent),
        attributes={"matchops.task.name": task_name, "matchops.task.id": task_id},
    ):
        yield


@contextlib.contextmanager
def _relaying(
    tracer: trace.Tracer, event_type: str, event_id: str, traceparent: str | None
) -> Iterator[dict[str, str]]:
    with tracer.start_as_current_span(
        f"publish {event_type}",
        context=_parent(traceparent),
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.operation.type": "send",
            "messaging.destination.name": EVENTS_EXCHANGE,
            "messaging.message.id": event_id,
            "matchops.event.type": event_type,
        },
    ) as span:
        headers: dict[str, str] = {}
        _W3C.inject(headers, context=trace.set_span_in_context(span))
        yield headers
