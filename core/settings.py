"""The one typed settings object, read from the environment (see README, Configuration)."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    # Redis redelivers unacknowledged messages after this; every countdown the API
    # accepts stays below it, or the message would run again and again.
    visibility_timeout: int = Field(7200, gt=0)
    max_countdown_seconds: int = Field(3600, gt=0)

    log_level: str = "INFO"

    # Send a sweep of the topic, or the outbox relay, right after a commit that makes
    # one due. Off, pairing and events wait for beat's safety tick (a comparison the
    # time-to-match bench makes).
    commit_triggers: bool = True

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
