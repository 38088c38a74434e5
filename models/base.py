"""Declarative base: timestamps are timestamptz, constraints get stable names, and status
columns hold the members of their `StrEnum` as plain text."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from sqlalchemy import BindParameter, ColumnElement, DateTime, Dialect, MetaData, Text
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

    A status compared with the column (`==`, `!=`, `in_()`) is written into the SQL text
    as a literal, not sent as a parameter: a partial index (`WHERE status = 'pending'`)
    serves only a query whose condition it can prove, and a prepared statement's generic
    plan cannot prove it of a parameter. A status written by INSERT or UPDATE stays a
    parameter, so a flush of many rows is still one executemany.
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

    def coerce_compared_value(self, op: Any, value: Any) -> StatusText[StatusT]:
        """The type of a value compared with the column: a status is written into the SQL.

        Anything else stays a parameter, so its bind processing refuses it with the
        enum's own error when the statement runs (a literal's error would hide it).
        """
        try:
            self.enum(value)
        except ValueError:
            return self
        return _ComparedStatus(self.enum)


class _ComparedStatus(StatusText[StatusT]):
    """A status compared with a status column, rendered as a checked literal when the
    statement runs (the same check as a parameter: an unknown status is refused)."""

    cache_ok = True

    def bind_expression(self, bindvalue: BindParameter[StatusT]) -> ColumnElement[StatusT]:
        """The value as a literal in the executed SQL."""
        return bindvalue.render_literal_execute()
