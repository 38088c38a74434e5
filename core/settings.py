"""The one typed settings object, read from the environment (see README, Configuration)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# RFC 7518 (3.2): an HS256 key must be at least as long as the hash output.
MIN_AUTH_SECRET_BYTES = 32


class MissingSetting(RuntimeError):
    """A required environment variable is not set; the message says which and how to set it."""


class Settings(BaseSettings):
    """Every knob of matchops. Names match the environment variables of the contract."""

    model_config = SettingsConfigDict(env_file=None, case_sensitive=False, extra="ignore")

    # Connections. None means "not configured": the runtime starts embedded servers
    # and exports their URLs before anything reads these.
    database_url: str | None = None
    broker_url: str | None = None
    result_backend: str | None = None
    # Where `session:{id}` keys for the collaboration service live; defaults to the
    # result backend or broker, whichever is Redis.
    session_redis_url: str | None = None

    auth_secret: str | None = None

    matching_timeout_seconds: int = Field(60, gt=0)
    confirm_match_timeout_seconds: int = Field(120, gt=0)
    max_concurrent_matches: int = Field(5000, ge=0)
    max_mentees: int = Field(2, ge=0)
    mentorship_request_timeout_seconds: int = Field(604800, gt=0)

    # Task execution limits. The hard limit kills a stuck child; the soft one lets the
    # task roll back its transaction first.
    task_soft_time_limit: int = Field(120, gt=0)
    task_time_limit: int = Field(150, gt=0)
    # Redis hands an unacknowledged message to another worker after this. No countdown
    # lives in the broker (they wait in PostgreSQL), so it only has to outlast the
    # longest task: unset, it is TASK_TIME_LIMIT plus three minutes.
    visibility_timeout: int | None = Field(None, gt=0)
    # Countdowns wait in PostgreSQL, so they are bounded by what callers need, not by
    # the broker.
    max_countdown_seconds: int = Field(86400, gt=0)
    # An accepted task with no outcome this long after it was last dispatched (and not
    # running right now) is published again: a lost message, a dead worker on Redis.
    redispatch_after_seconds: int = Field(300, gt=0)
    # How often the dispatcher looks for due countdowns and tasks to dispatch again.
    dispatch_interval_seconds: float = Field(1.0, gt=0, le=60)
    # A task delivered this many times without an outcome (it keeps killing its worker,
    # or failing transiently) ends as FAILURE instead of running again.
    # Below RabbitMQ's own delivery limit on matchops queues (20, celeryconfig.py).
    task_max_deliveries: int = Field(8, ge=2, le=19)

    # Tokens: the HS256 secret must be at least this long, and no token may live longer.
    max_token_ttl_seconds: int = Field(30 * 24 * 3600, gt=0)

    log_level: str = "INFO"
    # A log line for every task received and succeeded and every HTTP call answered
    # below 400 (core.logs); the ledger, Flower and /metrics record each of them anyway.
    log_successes: bool = False

    # Audit rows older than this are pruned by `maintenance.reconcile`.
    audit_retention_days: int = Field(90, gt=0)
    # A pending peer request waiting longer than this, with no partner in its own pool,
    # may be paired with one of an adjacent difficulty in its topic. Unset: never.
    peer_relax_after_seconds: int | None = Field(None, gt=0)

    # Admission control: while the oldest accepted task of a queue that has not started
    # has waited longer than this, the API refuses enqueues for that queue with 429
    # instead of accepting work nobody will start in time. Unset: never.
    max_queue_wait_seconds: float | None = Field(None, gt=0)

    # Send a sweep of the topic, or the outbox relay, right after a commit that makes
    # one due. Off, pairing and events wait for beat's safety tick (a comparison the
    # time-to-match bench makes).
    commit_triggers: bool = True

    # The longest a silent client's PostgreSQL session keeps its transaction open and
    # its locks held: a worker host that lost power or its network, a frozen process.
    # Every connection matchops opens asks the server for it (core.db.session_options):
    # idle-in-transaction timeout, server keepalives and TCP user timeout.
    db_silent_client_seconds: int = Field(30, ge=4, le=600)
    # How long a statement waits for another transaction's lock before it gives up; the
    # task base then retries the task later (workers.base) instead of holding a worker
    # process behind a transaction that may never end.
    db_lock_timeout_ms: int = Field(3000, ge=100)
    # Tracing (docs/operations.md, Tracing), by OpenTelemetry's own variables. On when a traces
    # exporter is named or an OTLP endpoint is set, unless OTEL_SDK_DISABLED; the SDK
    # reads the rest of OTEL_* (headers, timeouts, sampler, batch sizes) itself.
    otel_sdk_disabled: bool = False
    otel_traces_exporter: str | None = None
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_exporter_otlp_protocol: str | None = None
    otel_exporter_otlp_traces_protocol: str | None = None
    otel_service_name: str = "matchops"

    @model_validator(mode="after")
    def _limits_fit_together(self) -> Settings:
        # Each limit must end before the next one takes over, or a slow task would be
        # killed before it can roll back, or redelivered while it still runs.
        if not self.task_soft_time_limit < self.task_time_limit:
            raise ValueError(
                f"TASK_SOFT_TIME_LIMIT ({self.task_soft_time_limit}) must be below "
                f"TASK_TIME_LIMIT ({self.task_time_limit})"
            )
        if self.visibility_timeout is not None and not (
            self.task_time_limit < self.visibility_timeout
        ):
            raise ValueError(
                f"VISIBILITY_TIMEOUT ({self.visibility_timeout}) must be above "
                f"TASK_TIME_LIMIT ({self.task_time_limit})"
            )
        if self.max_queue_wait_seconds is not None and not (
            self.max_queue_wait_seconds < self.redispatch_after_seconds
        ):
            # Tasks would be published again while the door still took more of them.
            raise ValueError(
                f"MAX_QUEUE_WAIT_SECONDS ({self.max_queue_wait_seconds:g}) must be below "
                f"REDISPATCH_AFTER_SECONDS ({self.redispatch_after_seconds})"
            )
        if not self.task_time_limit < self.redispatch_after_seconds:
            # A task still running must not be dispatched again beside itself; only a
            # task past its hard limit, killed, may have been lost.
            raise ValueError(
                f"REDISPATCH_AFTER_SECONDS ({self.redispatch_after_seconds}) must be above "
                f"TASK_TIME_LIMIT ({self.task_time_limit}): raise REDISPATCH_AFTER_SECONDS "
                "or lower TASK_TIME_LIMIT"
            )
        return self

    @model_validator(mode="after")
    def _stall_bounds_fit(self) -> Settings:
        # A lock wait must end well before the soft limit would end the task instead,
        # and within the time a silent holder may keep its locks, or giving up early
        # would buy nothing.
        lock_wait_seconds = self.db_lock_timeout_ms / 1000
        if not lock_wait_seconds < self.db_silent_client_seconds:
            raise ValueError(
                f"DB_LOCK_TIMEOUT_MS ({self.db_lock_timeout_ms}) must be below "
                f"DB_SILENT_CLIENT_SECONDS ({self.db_silent_client_seconds}) in seconds: "
                "lower DB_LOCK_TIMEOUT_MS"
            )
        if not lock_wait_seconds < self.task_soft_time_limit:
            raise ValueError(
                f"DB_LOCK_TIMEOUT_MS ({self.db_lock_timeout_ms}) must be below "
                f"TASK_SOFT_TIME_LIMIT ({self.task_soft_time_limit}) in seconds: "
                "lower DB_LOCK_TIMEOUT_MS"
            )
        # A task's guard transaction is legitimately idle while the task runs, up to
        # the hard limit; the silent-client bound is for everything else.
        if not self.db_silent_client_seconds < self.task_time_limit:
            raise ValueError(
                f"DB_SILENT_CLIENT_SECONDS ({self.db_silent_client_seconds}) must be below "
                f"TASK_TIME_LIMIT ({self.task_time_limit}): lower DB_SILENT_CLIENT_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def _trace_export_installed(self) -> Settings:
        _check_trace_export(self)
        return self

    @property
    def trace_exporters(self) -> list[str]:
        """The span exporters tracing sends to (`otlp`, `console`); empty while it is off."""
        if self.otel_sdk_disabled:
            return []
        named = self.otel_traces_exporter
        if named is None:
            endpoint = self.otel_exporter_otlp_traces_endpoint or self.otel_exporter_otlp_endpoint
            return ["otlp"] if endpoint else []
        exporters = [name.strip() for name in named.split(",") if name.strip()]
        return [] if exporters == ["none"] else exporters

    @property
    def broker_visibility_timeout(self) -> int:
        """Seconds Redis waits for an acknowledgement before redelivering a message."""
        return self.visibility_timeout or self.task_time_limit + 180

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, value: str | None) -> str | None:
        # Sibling services often hand us a libpq-style URL; SQLAlchemy needs the driver named.
        if value and value.startswith(("postgres://", "postgresql://")):
            _scheme, rest = value.split("://", 1)
            return f"postgresql+psycopg://{rest}"
        return value

    def require(self, name: str) -> str:
        """The value of a required setting, or a MissingSetting naming the variable."""
        value = getattr(self, name)
        if not value:
            env = name.upper()
            raise MissingSetting(
                f"{env} is not set. Export {env}=... (see README, Configuration), "
                "or use `make run` / `make demo`, which start embedded servers and set it."
            )
        return str(value)

    @property
    def api_secret(self) -> str:
        """The API's token secret; fails fast when unset or too short to be safe."""
        secret = self.require("auth_secret")
        if len(secret.encode()) < MIN_AUTH_SECRET_BYTES:
            raise MissingSetting(
                f"AUTH_SECRET is {len(secret.encode())} bytes long; HS256 needs at least "
                f"{MIN_AUTH_SECRET_BYTES}. Export AUTH_SECRET=$(openssl rand -hex 32)."
            )
        return secret

    @property
    def db_url(self) -> str:
        """SQLAlchemy URL of the database; fails fast when unset."""
        return self.require("database_url")

    @property
    def broker(self) -> str:
        """Celery broker URL; fails fast when unset."""
        return self.require("broker_url")

    @property
    def backend(self) -> str:
        """Celery result backend; defaults to the broker when that is Redis."""
        if self.result_backend:
            return self.result_backend
        broker = self.broker
        if _is_redis(broker):
            return broker
        raise MissingSetting(
            "RESULT_BACKEND is not set and BROKER_URL is not Redis. "
            "Export RESULT_BACKEND=redis://host:6379/0."
        )

    @property
    def session_store_url(self) -> str:
        """Redis URL for collaboration-session keys."""
        for candidate in (self.session_redis_url, self.result_backend, self.broker_url):
            if candidate and _is_redis(candidate):
                return candidate
        raise MissingSetting(
            "No Redis is configured for session keys. Export SESSION_REDIS_URL=redis://host:6379/0."
        )


TRACE_EXPORTERS = ("otlp", "console")
OTLP_PROTOCOL = "http/protobuf"


def _check_trace_export(settings: Settings) -> None:
    for name in settings.trace_exporters:
        if name not in TRACE_EXPORTERS:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER names {name!r}; matchops exports spans with "
                f"{' or '.join(TRACE_EXPORTERS)} (or none)"
            )
    protocol = settings.otel_exporter_otlp_traces_protocol or settings.otel_exporter_otlp_protocol
    if "otlp" in settings.trace_exporters and protocol not in (None, OTLP_PROTOCOL):
        raise ValueError(
            f"OTLP protocol {protocol!r} is not installed; matchops ships the {OTLP_PROTOCOL} "
            "exporter: set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf and point "
            "OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port (4318)"
        )


def describe_invalid(error: ValidationError) -> str:
    """What is wrong with the environment, one problem a line, each naming its variable
    (a check between settings names them in its message)."""
    problems = []
    for problem in error.errors(include_url=False):
        message = problem["msg"].removeprefix("Value error, ")
        names = ".".join(str(part) for part in problem["loc"]).upper()
        problems.append(f"{names}: {message}" if names else message)
    return "\n".join(problems)


def _is_redis(url: str) -> bool:
    return urlsplit(url).scheme in {"redis", "rediss", "redis+socket"}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


def export_environment(values: Mapping[str, str], purpose: str) -> None:
    """Set `values` in the environment, where the settings (read once) will find them.

    A RuntimeError naming `purpose` when the settings were already read: whatever read
    them would go on using the old values.
    """
    if get_settings.cache_info().currsize:
        raise RuntimeError(f"the settings were read before {purpose}")
    os.environ.update(values)
