"""`mentorship.unmatch`: the whole cascade, from either side, once."""

from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import func, or_, select

from core.errors import Forbidden, MatchingError, NotFound
from models import MentorBlacklist, Message
from tests.factories import events_of, next_id
from tests.factories_mentorship import (
    holding_user_row,
    make_mentee,
    make_mentor,
    make_relationship,
    relationship_between,
    send_message,
)
from tests.support import (
    LONG_LOCK_WAIT,
    lock_waiter_pids,
    lock_waiters,
    queue_taken_from,
    run_task,
    running_worker,
    send,
    wait_for,
)


def _messages_between(db, a, b) -> int:
    db.expire_all()
    return int(
        db.scalar(
            select(func.count())
            .select_from(Message)
            .where(
                or_(
                    (Message.sender_id == a.id) & (Message.receiver_id == b.id),
                    (Message.sender_id == b.id) & (Message.receiver_id == a.id),
                )
            )
        )
    )


def _blacklisted(db, mentee, mentor) -> bool:
    db.expire_all()
    return db.get(MentorBlacklist, (mentee.id, mentor.id)) is not None


@pytest.mark.parametrize("asker", ["mentee", "mentor"])
def test_unmatch_runs_the_whole_cascade_from_either_side(worker, db, asker):
    mentee, mentor, bystander = make_mentee(db), make_mentor(db), make_mentee(db)
    relationship = make_relationship(db, mentor, mentee, status="active")
    for _ in range(3):
        send_message(db, mentee, mentor)
        send_message(db, mentor, mentee)
    kept = send_message(db, mentor, bystander)
    db.commit()
    user, other = (mentee, mentor) if asker == "mentee" else (mentor, mentee)

    result = run_task("mentorship.unmatch", user_id=user.id, other_id=other.id)

    assert result == {
        "relationship_id": relationship.id,
        "status": "completed",
        "mentor_id": mentor.id,
        "mentee_id": mentee.id,
    }
    ended = relationship_between(db, mentor.id, mentee.id)
    assert ended.status == "completed"
    assert ended.completed_at is not None
    assert _blacklisted(db, mentee, mentor)
    assert _messages_between(db, mentee, mentor) == 0
    assert db.get(Message, kept.id) is not None
    (event,) = events_of(db, "mentorship.unmatched", relationship_id=relationship.id)
    assert event == {
        "relationship_id": relationship.id,
        "mentor_id": mentor.id,
        "mentee_id": mentee.id,
        "unmatched_by": user.id,
        "messages_deleted": 6,
    }


def test_unmatching_twice_changes_nothing_more_and_emits_one_event(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    relationship = make_relationship(db, mentor, mentee, status="active")
    send_message(db, mentee, mentor)
    db.commit()

    first = run_task("mentorship.unmatch", user_id=mentee.id, other_id=mentor.id)
    completed_at = relationship_between(db, mentor.id, mentee.id).completed_at
    # A message sent after the unmatch is not the second run's business.
    send_message(db, mentor, mentee, body="after")
    db.commit()
    second = run_task("mentorship.unmatch", user_id=mentor.id, other_id=mentee.id)

    assert second == first
    assert relationship_between(db, mentor.id, mentee.id).completed_at == completed_at
    assert _messages_between(db, mentee, mentor) == 1
    assert len(events_of(db, "mentorship.unmatched", relationship_id=relationship.id)) == 1


def test_two_unmatches_at_once_emit_one_event(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    relationship = make_relationship(db, mentor, mentee, status="active")
    db.commit()

    results = [
        send("mentorship.unmatch", user_id=mentee.id, other_id=mentor.id),
        send("mentorship.unmatch", user_id=mentor.id, other_id=mentee.id),
    ]
    outcomes = [r.get(timeout=60) for r in results]

    assert outcomes[0] == outcomes[1]
    assert len(events_of(db, "mentorship.unmatched", relationship_id=relationship.id)) == 1


def test_a_paused_relationship_can_be_unmatched(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    make_relationship(db, mentor, mentee, status="paused")
    db.commit()

    assert run_task("mentorship.unmatch", user_id=mentee.id, other_id=mentor.id)["status"] == (
        "completed"
    )


def test_the_unmatched_mentor_cannot_be_selected_again(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    make_relationship(db, mentor, mentee, status="active")
    db.commit()
    run_task("mentorship.unmatch", user_id=mentee.id, other_id=mentor.id)

    with pytest.raises(Forbidden):
        run_task("mentorship.select", mentee_id=mentee.id, mentor_id=mentor.id)
    ranked = run_task("mentorship.rank", mentee_id=mentee.id)
    assert mentor.id not in {item["mentor_id"] for item in ranked}


@pytest.mark.parametrize("status", [None, "pending", "rejected", "completed"])
def test_users_who_are_not_matched_cannot_unmatch(worker, db, status):
    mentee, mentor = make_mentee(db), make_mentor(db)
    if status:
        make_relationship(db, mentor, mentee, status=status)
    send_message(db, mentee, mentor)
    db.commit()

    with pytest.raises(MatchingError, match="not matched with this user") as raised:
        run_task("mentorship.unmatch", user_id=mentee.id, other_id=mentor.id)
    assert raised.value.status == 400
    assert _messages_between(db, mentee, mentor) == 1
    assert not _blacklisted(db, mentee, mentor)


def test_unknown_user_is_not_found(worker, db):
    mentee = make_mentee(db)
    db.commit()
    missing = next_id()

    with pytest.raises(NotFound, match=f"User {missing} not found") as raised:
        run_task("mentorship.unmatch", user_id=mentee.id, other_id=missing)
    assert raised.value.status == 404


def test_unmatch_killed_mid_task_runs_again_and_cascades_once(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    relationship = make_relationship(db, mentor, mentee, status="active")
    send_message(db, mentee, mentor)
    db.commit()

    # Only the worker this test kills consumes the cascades queue meanwhile.
    with (
        queue_taken_from(worker, "cascades"),
        # A lock wait as long as the test needs to see it and kill the process in it.
        running_worker(
            "unmatch-victim", queues="cascades", concurrency=1, extra_env=LONG_LOCK_WAIT
        ) as victim,
    ):
        # Holding the users row parks the unmatch inside its transaction.
        with holding_user_row(mentor.id):
            result = send("mentorship.unmatch", user_id=mentee.id, other_id=mentor.id)
            wait_for(lambda: lock_waiters() == 1, what="unmatch to block")
            killed = lock_waiter_pids()
            (child,) = victim.child_pids()
            os.kill(child, signal.SIGKILL)
            wait_for(
                lambda: child not in victim.child_pids() and bool(victim.child_pids()),
                what="a replacement child",
            )
            # The redelivery waits for the rows the killed run's backend waits for too,
            # until the server finds that backend's client gone.
            wait_for(
                lambda: lock_waiter_pids() - killed,
                what="the redelivered unmatch to wait for the row",
            )
        answer = result.get(timeout=60)

    assert answer["relationship_id"] == relationship.id
    assert relationship_between(db, mentor.id, mentee.id).status == "completed"
    assert _blacklisted(db, mentee, mentor)
    assert _messages_between(db, mentee, mentor) == 0
    assert len(events_of(db, "mentorship.unmatched", relationship_id=relationship.id)) == 1
