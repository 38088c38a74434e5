"""Building blocks of the domains' SQLAlchemy Core statements."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import BigInteger, BindParameter, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session


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
