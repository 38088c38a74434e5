"""One engine per process and the session factory tasks and the API use."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """The process's engine. Forked workers dispose it (workers.signals) before first use."""
    settings = get_settings()
    return create_engine(
        settings.db_url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        # A dead database must surface as OperationalError quickly, so the task base
        # retries and /readyz answers instead of hanging.
        connect_args={"connect_timeout": 5},
    )


@lru_cache(maxsize=1)
def session_factory() -> sessionmaker[Session]:
    """`with session_factory().begin() as session:` opens one transaction."""
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def dispose_engine() -> None:
    """Drop inherited pooled connections (after fork) without closing the parent's."""
    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)
