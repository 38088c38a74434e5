"""Status columns: each is TEXT in the database and a member of its `StrEnum` in Python,
the migrations declare what the models do, and every status a task publishes in its
JSON schema is a member of the enum of the column it comes from."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, get_args, get_type_hints

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic_core import to_jsonable_python
from sqlalchemy import literal, select
from sqlalchemy.exc import StatementError

from domain.mentorship.lifecycle import SettableStatus
from domain.peer.confirm import PeerCancelledResult
from domain.peer.requests import PeerCancelResult, PeerRequestResult
from domain.peer.sessions import PeerLeaveResult
from models import (
    Base,
    Booking,
    CollabSession,
    GroupMember,
    Match,
    MatchRequest,
    MentorMentee,
    Reservation,
)
from models.base import StatusText
from models.carpool import MembershipStatus, ReservationStatus
from models.mentorship import BookingStatus, RelationshipStatus
from models.peer import MatchStatus, RequestStatus, SessionStatus

STATUS_COLUMNS: list[tuple[type[Base], type[StrEnum]]] = [
    (MatchRequest, RequestStatus),
    (Match, MatchStatus),
    (CollabSession, SessionStatus),
    (MentorMentee, RelationshipStatus),
    (Booking, BookingStatus),
    (GroupMember, MembershipStatus),
    (Reservation, ReservationStatus),
]


def status_values(shape: Any) -> tuple[str, ...]:
    """The values of the `Literal` a result shape declares for its `status`."""
    return get_args(get_type_hints(shape)["status"])


# Each published status set and the enum whose members it must name.
PUBLISHED: list[tuple[str, tuple[str, ...], type[StrEnum]]] = [
    ("mentorship.set_status args", get_args(SettableStatus), RelationshipStatus),
    ("peer.request result", status_values(PeerRequestResult), RequestStatus),
    ("peer.cancel result", status_values(PeerCancelResult), RequestStatus),
    ("peer.confirm result (declined)", status_values(PeerCancelledResult), MatchStatus),
    ("peer.leave result", status_values(PeerLeaveResult), SessionStatus),
]


@pytest.mark.parametrize(("model", "enum"), STATUS_COLUMNS, ids=lambda x: x.__name__)
def test_each_status_column_holds_its_enum(model: type[Base], enum: type[StrEnum]) -> None:
    column_type = model.__table__.c.status.type
    assert isinstance(column_type, StatusText)
    assert column_type.enum is enum


def test_a_status_reads_back_as_its_enum_member(db):
    loaded = db.scalar(select(literal("matched", MatchRequest.status.type)))
    assert loaded is RequestStatus.MATCHED


def test_a_status_its_enum_does_not_know_is_refused_before_the_database(db):
    with pytest.raises(StatementError, match="'matchd' is not a valid RequestStatus"):
        db.execute(select(MatchRequest.id).where(MatchRequest.status == "matchd"))


def test_a_status_serializes_as_its_plain_value():
    result = {"status": RequestStatus.PENDING}
    jsonable = to_jsonable_python(result)
    assert jsonable == {"status": "pending"}
    assert type(jsonable["status"]) is str
    assert json.dumps(result) == '{"status": "pending"}'
    assert f"it is {RequestStatus.PENDING}" == "it is pending"


@pytest.mark.parametrize(
    ("published", "values", "enum"), PUBLISHED, ids=[name for name, _, _ in PUBLISHED]
)
def test_every_published_status_is_a_member_of_its_enum(
    published: str, values: tuple[str, ...], enum: type[StrEnum]
) -> None:
    assert values
    assert set(values) <= {member.value for member in enum}, published


def test_the_migrated_schema_is_what_the_models_declare(db):
    # Status columns stay TEXT with their old defaults: typing them took no migration.
    context = MigrationContext.configure(
        db.connection(), opts={"compare_type": True, "compare_server_default": True}
    )
    assert compare_metadata(context, Base.metadata) == []
