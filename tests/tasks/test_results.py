"""Every task's result, as the real worker returns it, fits the result shape it publishes.

One case per task, one per answer of `peer.confirm`, whose result has three shapes,
and one for a `peer.sweep` of every pool, which fans out instead of pairing. Each
case seeds what its call needs and returns the call's args; the call then goes
through the session worker and its result is checked against the task's registered
shape (`tests.support.assert_fits_result_shape`, which `run_task` also applies to
every result of the rest of the suite).

| task | case |
|---|---|
| peer.request | `peer_request`: a new request in a fresh pool |
| peer.cancel | `peer_cancel`: the owner withdraws a pending request |
| peer.sweep | `peer_sweep`: a fresh pool of two is paired; `peer_sweep_every_pool`: fan-out |
| peer.confirm | `peer_confirm_waiting`: a first yes; `peer_confirm_session`: the second |
| | yes, with a question; `peer_confirm_cancelled`: a no |
| peer.expire | `peer_expire`: one expiry run |
| peer.explain | `peer_explain`: a lone pending request |
| peer.leave | `peer_leave`: one side leaves a started session |
| mentorship.rank | `mentorship_rank`: a mentee with one scored mentor |
| mentorship.select | `mentorship_select`: a mentee picks a mentor with room |
| mentorship.request | `mentorship_request`: a mentee asks a mentor |
| mentorship.respond | `mentorship_respond`: the mentor accepts a mentee's request |
| mentorship.set_status | `mentorship_set_status`: the mentee pauses an active relationship |
| mentorship.unmatch | `mentorship_unmatch`: the mentee ends an active relationship |
| mentorship.assign | `mentorship_assign`: a seeking mentee and a scored mentor with room |
| mentorship.expire | `mentorship_expire`: one expiry run |
| mentorship.backfill | `mentorship_backfill`: a booked pair without a relationship |
| mentorship.rebuild_stats | `mentorship_rebuild_stats`: one rebuild |
| carpool.member_left | `carpool_member_left`: a member of a group leaves it |
| carpool.group_deleted | `carpool_group_deleted`: a group of two members is deleted |
| carpool.cleanup_invitations | `carpool_cleanup_invitations`: one cleanup run |
| carpool.rebuild_stats | `carpool_rebuild_stats`: one reservation's statistics |
| events.publish | `events_publish`: one relay run |
| maintenance.reconcile | `maintenance_reconcile`: one reconcile run |
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pytest
from sqlalchemy.orm import Session

from submission.service import task_catalogue
from tests.factories import make_user, unique
from tests.factories_carpool import make_group, make_member, make_reservation
from tests.factories_mentorship import (
    book,
    make_mentee,
    make_mentor,
    make_relationship,
    set_score,
)
from tests.factories_peer import make_pool, make_question, make_request, swept_match
from tests.support import assert_fits_result_shape, run_task, send


class Case(NamedTuple):
    """A call of `task`, whose args `arrange` returns once it has seeded their rows."""

    task: str
    arrange: Callable[[Session], dict[str, Any]]


def peer_request(db: Session) -> dict[str, Any]:
    return {"user_id": make_user(db).id, "difficulty": "Easy", "topic": unique("results")}


def peer_cancel(db: Session) -> dict[str, Any]:
    request = make_request(db, topic=unique("results"))
    return {"request_id": str(request.id), "user_id": request.user_id}


def peer_sweep(db: Session) -> dict[str, Any]:
    topic = unique("results")
    make_pool(db, 2, topic=topic)
    return {"difficulty": "Easy", "topic": topic}


def peer_confirm_waiting(db: Session) -> dict[str, Any]:
    match = swept_match(db, unique("results"))
    return {"match_id": str(match.id), "user_id": match.user_a, "confirmed": True}


def peer_confirm_session(db: Session) -> dict[str, Any]:
    topic = unique("results")
    make_question(db, difficulty="Easy", topics=[topic])
    match = swept_match(db, topic)
    run_task("peer.confirm", match_id=str(match.id), user_id=match.user_a, confirmed=True)
    return {"match_id": str(match.id), "user_id": match.user_b, "confirmed": True}


def peer_confirm_cancelled(db: Session) -> dict[str, Any]:
    match = swept_match(db, unique("results"))
    return {"match_id": str(match.id), "user_id": match.user_a, "confirmed": False}


def peer_explain(db: Session) -> dict[str, Any]:
    return {"request_id": str(make_request(db, topic=unique("results")).id)}


def peer_leave(db: Session) -> dict[str, Any]:
    match = swept_match(db, unique("results"))
    run_task("peer.confirm", match_id=str(match.id), user_id=match.user_a, confirmed=True)
    found = run_task("peer.confirm", match_id=str(match.id), user_id=match.user_b, confirmed=True)
    return {"session_id": found["session_id"], "user_id": match.user_a}


def mentorship_rank(db: Session) -> dict[str, Any]:
    mentee = make_mentee(db)
    set_score(db, mentee, make_mentor(db), 0.5)
    return {"mentee_id": mentee.id}


def mentorship_select(db: Session) -> dict[str, Any]:
    return {"mentee_id": make_mentee(db).id, "mentor_id": make_mentor(db).id}


def mentorship_request(db: Session) -> dict[str, Any]:
    return {
        "mentor_id": make_mentor(db).id,
        "mentee_id": make_mentee(db).id,
        "initiated_by": "mentee",
    }


def mentorship_respond(db: Session) -> dict[str, Any]:
    mentor = make_mentor(db)
    relationship = make_relationship(db, mentor, make_mentee(db), status="pending")
    return {"relationship_id": relationship.id, "user_id": mentor.id, "accept": True}


def mentorship_set_status(db: Session) -> dict[str, Any]:
    mentee = make_mentee(db)
    relationship = make_relationship(db, make_mentor(db), mentee)
    return {"relationship_id": relationship.id, "user_id": mentee.id, "status": "paused"}


def mentorship_unmatch(db: Session) -> dict[str, Any]:
    mentor, mentee = make_mentor(db), make_mentee(db)
    make_relationship(db, mentor, mentee)
    return {"user_id": mentee.id, "other_id": mentor.id}


def mentorship_assign(db: Session) -> dict[str, Any]:
    set_score(db, make_mentee(db, seeking_mentor=True), make_mentor(db), 0.5)
    return {}


def mentorship_backfill(db: Session) -> dict[str, Any]:
    book(db, make_mentor(db), make_mentee(db), "confirmed", datetime.now(UTC))
    return {}


def carpool_member_left(db: Session) -> dict[str, Any]:
    group = make_group(db)
    return {"group_id": group.id, "user_id": make_member(db, group).id}


def carpool_group_deleted(db: Session) -> dict[str, Any]:
    group = make_group(db)
    make_member(db, group)
    make_member(db, group)
    return {"group_id": group.id}


def carpool_rebuild_stats(db: Session) -> dict[str, Any]:
    return {"reservation_ids": [make_reservation(db, make_user(db)).id]}


def no_args(db: Session) -> dict[str, Any]:
    return {}


CASES = {
    "peer_request": Case("peer.request", peer_request),
    "peer_cancel": Case("peer.cancel", peer_cancel),
    "peer_sweep": Case("peer.sweep", peer_sweep),
    "peer_sweep_every_pool": Case("peer.sweep", no_args),
    "peer_confirm_waiting": Case("peer.confirm", peer_confirm_waiting),
    "peer_confirm_session": Case("peer.confirm", peer_confirm_session),
    "peer_confirm_cancelled": Case("peer.confirm", peer_confirm_cancelled),
    "peer_expire": Case("peer.expire", no_args),
    "peer_explain": Case("peer.explain", peer_explain),
    "peer_leave": Case("peer.leave", peer_leave),
    "mentorship_rank": Case("mentorship.rank", mentorship_rank),
    "mentorship_select": Case("mentorship.select", mentorship_select),
    "mentorship_request": Case("mentorship.request", mentorship_request),
    "mentorship_respond": Case("mentorship.respond", mentorship_respond),
    "mentorship_set_status": Case("mentorship.set_status", mentorship_set_status),
    "mentorship_unmatch": Case("mentorship.unmatch", mentorship_unmatch),
    "mentorship_assign": Case("mentorship.assign", mentorship_assign),
    "mentorship_expire": Case("mentorship.expire", no_args),
    "mentorship_backfill": Case("mentorship.backfill", mentorship_backfill),
    "mentorship_rebuild_stats": Case("mentorship.rebuild_stats", no_args),
    "carpool_member_left": Case("carpool.member_left", carpool_member_left),
    "carpool_group_deleted": Case("carpool.group_deleted", carpool_group_deleted),
    "carpool_cleanup_invitations": Case("carpool.cleanup_invitations", no_args),
    "carpool_rebuild_stats": Case("carpool.rebuild_stats", carpool_rebuild_stats),
    "events_publish": Case("events.publish", no_args),
    "maintenance_reconcile": Case("maintenance.reconcile", no_args),
}


def test_every_task_has_a_case():
    assert {case.task for case in CASES.values()} == set(task_catalogue())


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_result_fits_the_published_shape(worker, db, case: Case):
    args = case.arrange(db)
    db.commit()
    result = send(case.task, **args).get(timeout=60, disable_sync_subtasks=False)
    assert_fits_result_shape(case.task, result)
