"""`alembic upgrade head` without an ini file, for the CLI, tests and compose."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

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
