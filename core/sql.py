"""Building blocks of the domains' SQLAlchemy Core statements."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnClause,
    ColumnElement,
    Numeric,
    Text,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Update

# An empty array, untyped: `coalesce(array_agg(...), EMPTY_ARRAY)` for an aggregate of
# no rows, which is NULL otherwise; the literal takes the aggregate's type.
EMPTY_ARRAY: ColumnClause[Any] = literal_column("'{}'")


def id_array(name: str, ids: Iterable[int] | None = None) -> BindParameter[Sequence[int]]:
    """One bigint[] parameter, so a list of any length is a single bind value.

    Without `ids`, the values are passed when the statement is executed: a statement
    built once and run many times.
    """
    values: Sequence[int] | None = None if ids is None else list(ids)
    return bindparam(name, values, type_=ARRAY(BigInteger))


def set_local(session: Session, settings: Mapping[str, str]) -> None:
    """Change planner or resource settings for the rest of the session's transaction.

    `set_config(name, value, true)` is `SET LOCAL` with parameters: the values end with
    the transaction, so a pooled connection never carries them into another one.
    """
    session.execute(
        select(*(func.set_config(name, value, True) for name, value in settings.items()))
    )


def inline(value: str) -> BindParameter[str]:
    """A constant (an event type, a JSON key, a status that is a `case()` result) written
    into the SQL text rather than sent as a parameter.

    A status compared with a status column needs none: the column's type
    (`models.base.StatusText`) writes it into the SQL itself. A partial index
    (`WHERE status = 'pending'`) serves only a query whose condition it can prove, and a
    prepared statement's generic plan cannot prove it of a parameter.
    """
    return literal(str(value), Text, literal_execute=True)


def json_object(**fields: ColumnElement[Any] | InstrumentedAttribute[Any]) -> ColumnElement[Any]:
    """`jsonb_build_object` of these keys, written into the SQL, and values."""
    return func.jsonb_build_object(
        *(v for key, value in fields.items() for v in (inline(key), value))
    )


def seconds_before_now(seconds: ColumnElement[Any]) -> ColumnElement[datetime]:
    """The database's `now()` minus `seconds` (an int or float expression)."""
    return func.now() - literal_column("interval '1 second'") * seconds


def epoch_seconds(
    moment: ColumnElement[Any] | InstrumentedAttribute[Any],
) -> ColumnElement[Decimal]:
    """Seconds since the epoch of a timestamp, or seconds in an interval."""
    return type_coerce(func.extract("epoch", moment), Numeric())


def epoch_microseconds(
    moment: ColumnElement[Any] | InstrumentedAttribute[Any],
) -> ColumnElement[int]:
    """Whole microseconds since the epoch of a timestamp, as a bigint."""
    return cast(epoch_seconds(moment) * literal_column("1000000"), BigInteger)


def skip_locked_update(
    key: InstrumentedAttribute[Any],
    due: Select[Any],
    still: ColumnElement[bool],
    *,
    name: str = "due",
    of: Any = None,
) -> Update:
    """An UPDATE of the rows whose `key` `due` selects, once they are row-locked.

    Rows another transaction holds are skipped and left to the next run; `still` is
    checked again on the locked row, which another transaction may have changed between
    `due`'s snapshot and the lock.
    """
    locked = due.with_for_update(skip_locked=True, of=of).cte(name)
    return update(key.class_).where(key == locked.c[key.key], still)


class HistogramQuery:
    """The columns that count a `wait` expression into cumulative buckets, and the buckets
    back.

    `columns` are the bucket counts, the count and the sum of `wait`, in that order;
    `buckets` turns those values of one result row into what `HistogramMetricFamily` takes.
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)

    def columns(self, wait: ColumnElement[Any]) -> list[ColumnElement[Any]]:
        """The aggregates over `wait` that `buckets` reads back."""
        counts = [
            func.count().filter(wait <= bindparam(f"bucket_{index}", bound))
            for index, bound in enumerate(self.bounds)
        ]
        return [*counts, func.count(), func.coalesce(func.sum(wait), 0)]

    def buckets(self, values: Sequence[Any]) -> tuple[list[tuple[str, float]], float]:
        """(buckets with +Inf, sum) from the values `columns` produced."""
        *cumulative, total, seconds = values
        buckets = [(f"{b:g}", float(n)) for b, n in zip(self.bounds, cumulative, strict=True)]
        return [*buckets, ("+Inf", float(total))], float(seconds)
