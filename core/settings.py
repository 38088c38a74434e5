"""The one typed settings object, read from the environment (see README, Configuration)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
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

    # Audit rows older than this are pruned by `maintenance.reconcile`.
    audit_retention_days: int = Field(90, gt=0)
    # A pending peer request waiting longer than this, with no partner in its own pool,
    # may be paired with one of an adjacent difficulty in its topic. Unset: never.
    peer_relax_after_seconds: int | None = Field(None, gt=0)

    # Send a sweep of the topic, or the outbox relay, right after a commit that makes
    # one due. Off, pairing and events wait for beat's safety tick (a comparison the
    # time-to-match bench makes).
    commit_triggers: bool = True

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
        if not self.task_time_limit < self.redispatch_after_seconds:
            # A task still running must not be dispatched again beside itself; only a
            # task past its hard limit, killed, may have been lost.
            raise ValueError(
                f"REDISPATCH_AFTER_SECONDS ({self.redispatch_after_seconds}) must be above "
                f"TASK_TIME_LIMIT ({self.task_time_limit}): raise REDISPATCH_AFTER_SECONDS "
                "or lower TASK_TIME_LIMIT"
            )
        return self

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
