"""Declarative base: timestamps are timestamptz, constraints get stable names, and status
columns hold the members of their `StrEnum` as plain text."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from sqlalchemy import DateTime, Dialect, MetaData, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

# Stable names so Alembic migrations can refer to constraints by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

StatusT = TypeVar("StatusT", bound=StrEnum)


class Base(DeclarativeBase):
    """Base of every matchops table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
    }


class StatusText(TypeDecorator[StatusT]):
    """A status column: TEXT in the database, a member of `enum` in Python.

    A value the enum does not know is refused before it reaches the database, and every
    row read back is a member, so code compares and assigns members only. The column
    stays plain TEXT (not a PostgreSQL enum type), so adding a status needs no migration
    and raw SQL keeps its string literals.
    """

    impl = Text
    cache_ok = True

    def __init__(self, enum: type[StatusT]) -> None:
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value: StatusT | str | None, dialect: Dialect) -> str | None:
        """The member's text; ValueError for a string that is none of the enum's values."""
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> StatusT | None:
        """The member a stored value names."""
        return None if value is None else self.enum(value)
