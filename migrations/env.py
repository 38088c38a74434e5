"""Alembic environment: the URL comes from the settings object (DATABASE_URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from core.db import connect_args
from core.locks import hold_advisory_lock
from core.settings import get_settings
from models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Run migrations on DATABASE_URL in one transaction."""
    url = context.config.get_main_option("sqlalchemy.url") or get_settings().db_url
    # The timeouts of every matchops connection, but no lock timeout: a migration waits
    # for the tasks holding its tables (a silent one at most DB_SILENT_CLIENT_SECONDS).
    engine = create_engine(
        url, poolclass=pool.NullPool, connect_args=connect_args(get_settings(), lock_timeout=False)
    )
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            # Two processes migrating at once (worker and api starting together)
            # take turns instead of racing on the same DDL.
            hold_advisory_lock(connection, "matchops.migrations")
            context.run_migrations()


run_migrations_online()
