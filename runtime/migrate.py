"""`alembic upgrade head` without an ini file, for the CLI, tests and compose."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core.db import connect_args
from core.settings import get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url:
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_head(database_url: str | None = None) -> None:
    """Bring the schema to the newest revision (DATABASE_URL unless given)."""
    command.upgrade(alembic_config(database_url), "head")


# Only scratch databases may be wiped: the test suite and the benches rebuild theirs.
SCRATCH_MARKERS = ("test", "bench")


def refuse_unless_scratch(database_url: str) -> None:
    """RuntimeError unless the database's name marks it as scratch ("test" or "bench")."""
    name = make_url(database_url).database or ""
    if not any(marker in name for marker in SCRATCH_MARKERS):
        raise RuntimeError(
            f"refusing to wipe database {name!r}: only scratch databases whose name contains "
            "'test' or 'bench' are rebuilt (for example matchops_test). Point DATABASE_URL at one."
        )


def recreate_schema(database_url: str) -> None:
    """Create the database if missing and give it an empty public schema.

    Refuses any database whose name does not contain "test" or "bench", because
    everything in it is dropped.
    """
    refuse_unless_scratch(database_url)
    url = make_url(database_url)
    name = url.database or ""
    arguments = connect_args(get_settings(), lock_timeout=False)
    admin = create_engine(
        url.set(database="postgres"), isolation_level="AUTOCOMMIT", connect_args=arguments
    )
    with admin.connect() as conn:
        # A system catalogue, not one of the models: plain SQL says it best.
        exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        if not exists:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    engine = create_engine(url, isolation_level="AUTOCOMMIT", connect_args=arguments)
    with engine.connect() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()
