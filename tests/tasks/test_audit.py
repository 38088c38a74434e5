"""The audit trail through the real worker: a row per cascade, in the cascade's transaction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update

from core.context import CALLER_HEADER
from core.db import get_engine
from core.settings import get_settings
from models import AuditLog, GroupMember, Invitation, User
from tests.api.support import client_for
from tests.factories import unique
from tests.factories_carpool import (
    existing,
    invite,
    make_group,
    make_member,
    make_members,
    make_reservation,
)
from tests.factories_mentorship import (
    make_mentee,
    make_mentor,
    make_relationship,
    send_message,
    set_score,
)
from tests.factories_peer import backdate_request, make_request, pass_deadline, swept_match
from tests.runtime.commands import matchops
from tests.support import send, task_run
from workers.app import app


def run(name: str, **kwargs: Any) -> tuple[str, Any]:
    """Run a task through the worker; its id and result."""
    result = send(name, **kwargs)
    return result.id, result.get(timeout=60)


def audit_rows(db, task_id: str) -> list[AuditLog]:
    db.expire_all()
    return list(
        db.scalars(select(AuditLog).where(AuditLog.task_id == task_id).order_by(AuditLog.id))
    )


def test_unmatch_is_audited_once_with_the_task_and_its_caller(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    relationship = make_relationship(db, mentor, mentee)
    send_message(db, mentee, mentor)
    send_message(db, mentor, mentee)
    db.commit()

    task_id, _ = run("mentorship.unmatch", user_id=mentee.id, other_id=mentor.id)
    again_id, _ = run("mentorship.unmatch", user_id=mentee.id, other_id=mentor.id)

    (row,) = audit_rows(db, task_id)
    assert (row.task_name, row.caller, row.action) == (
        "mentorship.unmatch",
        "send_task",
        "mentorship.unmatch",
    )
    assert row.subject == {
        "relationship_id": relationship.id,
        "mentor_id": mentor.id,
        "mentee_id": mentee.id,
        "unmatched_by": mentee.id,
    }
    assert row.counts == {
        "relationships_completed": 1,
        "mentors_blacklisted": 1,
        "messages_deleted": 2,
    }
    # The second run changed nothing, so it left no row.
    assert audit_rows(db, again_id) == []


def test_the_caller_header_names_who_asked(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    make_relationship(db, mentor, mentee)
    db.commit()

    sent = app.send_task(
        "mentorship.unmatch",
        kwargs={"user_id": mentor.id, "other_id": mentee.id},
        headers={CALLER_HEADER: "beat"},
    )
    sent.get(timeout=60)

    (row,) = audit_rows(db, sent.id)
    assert row.caller == "beat"


def enqueue_unmatch(db, api_url: str, **options: Any) -> tuple[str, dict[str, int], Any]:
    """A mentee and mentor matched, and their unmatch enqueued through the API by a fresh
    caller with `options` (`wait`, `countdown`): the caller, the args, the API's answer."""
    mentee, mentor = make_mentee(db), make_mentor(db)
    make_relationship(db, mentor, mentee)
    db.commit()
    caller = unique("mentoring-app")
    args = {"user_id": mentee.id, "other_id": mentor.id}
    with client_for(api_url, ["mentorship.*"], sub=caller) as http:
        answer = http.post("/v1/tasks/mentorship.unmatch", json={"args": args, **options})
    return caller, args, answer


def test_a_task_the_api_accepted_is_audited_under_its_task_id_and_token_subject(
    worker, db, api_url: str
):
    caller, _, answer = enqueue_unmatch(db, api_url, wait=20)
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "SUCCESS"

    # The task id the API answered is the key to what the task changed.
    (row,) = audit_rows(db, answer.json()["task_id"])
    assert (row.task_name, row.caller, row.action) == (
        "mentorship.unmatch",
        caller,
        "mentorship.unmatch",
    )


def test_a_sibling_sending_the_id_of_a_task_the_api_accepted_runs_it_for_the_api_caller(
    worker, db, api_url: str
):
    # Accepted and waiting in PostgreSQL for its countdown, not yet published.
    caller, args, accepted = enqueue_unmatch(db, api_url, countdown=600)
    assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["task_id"]

    # The sibling's message names no caller: its delivery is counted first, which reads
    # the caller the API recorded, and the work runs for that caller.
    sent = app.send_task("mentorship.unmatch", kwargs=args, task_id=task_id, ignore_result=False)
    sent.get(timeout=60)

    (row,) = audit_rows(db, task_id)
    assert (row.task_name, row.caller) == ("mentorship.unmatch", caller)
    run = task_run(task_id)
    assert (run.state, run.deliveries, run.caller) == ("SUCCESS", 1, caller)


def test_member_left_is_audited_with_what_it_removed(worker, db):
    group = make_group(db)
    alice, bob = make_member(db, group), make_member(db, group)
    invite(db, make_reservation(db, alice), make_reservation(db, bob))
    db.commit()

    task_id, result = run("carpool.member_left", group_id=group.id, user_id=alice.id)

    (row,) = audit_rows(db, task_id)
    assert (row.action, row.subject) == (
        "carpool.member_left",
        {"group_id": group.id, "user_id": alice.id},
    )
    assert row.counts == {
        "memberships_ended": 1,
        "invitations_removed": 1,
        "matches_removed": 0,
        "reservations_touched": 2,
    }
    assert result["invitations_removed"] == 1


def test_group_deleted_is_audited_per_transaction_under_its_task(worker, db):
    group = make_group(db)
    members = make_members(db, 3, group)
    reservations = [make_reservation(db, member) for member in members]
    invite(db, reservations[0], reservations[1])
    invite(db, reservations[1], reservations[2])
    db.commit()

    task_id, _ = run("carpool.group_deleted", group_id=group.id, batch_size=2)

    rows = audit_rows(db, task_id)
    assert {row.task_name for row in rows} == {"carpool.group_deleted"}
    closure, *batches = rows
    assert (closure.subject, closure.counts) == (
        {"group_id": group.id},
        {"groups_disabled": 1, "memberships_ended": 3},
    )
    ids = sorted(member.id for member in members)
    # The first batch (two members) removed both invitations; the second found nothing.
    ((batch),) = batches
    assert batch.subject == {"group_id": group.id, "user_ids": ids[:2]}
    assert batch.counts["invitations_removed"] == 2


def test_cleanup_invitations_is_audited_when_it_removes_something(worker, db):
    group = make_group(db)
    alice, bob = make_member(db, group), make_member(db, group)
    gone = invite(db, make_reservation(db, alice), make_reservation(db, bob)).id
    db.execute(update(GroupMember).where(GroupMember.user_id == alice.id).values(status="left"))
    db.commit()

    task_id, result = run("carpool.cleanup_invitations")
    idle_id, _ = run("carpool.cleanup_invitations")

    assert existing(db, Invitation, [gone]) == set()
    (row,) = audit_rows(db, task_id)
    assert row.action == "carpool.cleanup_invitations"
    assert row.counts["invitations_removed"] == result["invitations_removed"] >= 1
    assert audit_rows(db, idle_id) == []


def test_peer_expiry_is_audited_with_the_ids_it_expired(worker, db):
    topic = unique("topic")
    stale = make_request(db, topic=topic)
    db.commit()
    backdate_request(db, stale.id, 61)
    match = swept_match(db, unique("topic"))
    pass_deadline(db, match.id)

    task_id, result = run("peer.expire")

    (row,) = audit_rows(db, task_id)
    assert row.action == "peer.expire"
    assert str(stale.id) in row.subject["request_ids"]
    assert str(match.id) in row.subject["match_ids"]
    assert row.counts == result


def test_mentorship_expiry_and_assignment_are_audited(worker, db):
    timeout = get_settings().mentorship_request_timeout_seconds
    mentor = make_mentor(db, max_mentees=5)
    stale = make_relationship(
        db,
        mentor,
        make_mentee(db),
        status="pending",
        created_at=datetime.now(UTC) - timedelta(seconds=timeout + 60),
    )
    db.execute(update(User).where(User.seeking_mentor).values(seeking_mentor=False))
    seeker = make_mentee(db, seeking_mentor=True)
    set_score(db, seeker, mentor, 0.9)
    db.commit()

    expire_id, _ = run("mentorship.expire")
    assign_id, assigned = run("mentorship.assign")

    (expiry,) = audit_rows(db, expire_id)
    assert stale.id in expiry.subject["relationship_ids"]
    (assignment,) = audit_rows(db, assign_id)
    assert assignment.subject == {"pairs": [{"mentee_id": seeker.id, "mentor_id": mentor.id}]}
    assert assignment.counts == assigned == {"assigned": 1, "total_score": 0.9}


@contextmanager
def audit_refused_for_user(user_id: int) -> Iterator[None]:
    """Fail, at commit, every transaction that writes an audit row about `user_id`."""
    with get_engine().begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN IF NEW.subject->>'user_id' = TG_ARGV[0] THEN "
                "RAISE EXCEPTION 'audit refused'; END IF; RETURN NULL; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE CONSTRAINT TRIGGER refuse_audit AFTER INSERT ON audit_log "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                f"EXECUTE FUNCTION refuse_audit('{int(user_id)}')"
            )
        )
    try:
        yield
    finally:
        with get_engine().begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_audit ON audit_log"))
            conn.execute(text("DROP FUNCTION refuse_audit()"))


def test_the_audit_row_and_the_cascade_commit_or_roll_back_together(worker, db):
    group = make_group(db)
    alice, bob = make_member(db, group), make_member(db, group)
    kept = invite(db, make_reservation(db, alice), make_reservation(db, bob)).id
    db.commit()

    with audit_refused_for_user(alice.id):
        refused = send("carpool.member_left", group_id=group.id, user_id=alice.id)
        with pytest.raises(Exception, match="audit refused"):
            refused.get(timeout=60)

    # The commit failed after every statement ran: neither the row nor the change stayed.
    assert audit_rows(db, refused.id) == []
    assert existing(db, Invitation, [kept]) == {kept}
    membership = select(GroupMember.status).where(GroupMember.user_id == alice.id)
    assert db.scalar(membership) == "active"

    task_id, _ = run("carpool.member_left", group_id=group.id, user_id=alice.id)
    assert len(audit_rows(db, task_id)) == 1
    assert existing(db, Invitation, [kept]) == set()


def test_reconcile_prunes_rows_past_the_retention(worker, db):
    retention = get_settings().audit_retention_days
    old, recent = (
        AuditLog(
            occurred_at=datetime.now(UTC) - timedelta(days=days),
            action="test.pruning",
            subject={"marker": unique("marker")},
            counts={"things": 1},
        )
        for days in (retention + 1, retention - 1)
    )
    db.add_all([old, recent])
    db.commit()
    old_id, recent_id = old.id, recent.id

    _, report = run("maintenance.reconcile")

    assert report["audit_rows_pruned"] >= 1
    db.expunge_all()
    assert db.get(AuditLog, old_id) is None
    assert db.get(AuditLog, recent_id) is not None


def test_matchops_audit_prints_what_a_task_changed(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    make_relationship(db, mentor, mentee)
    db.commit()
    task_id, _ = run("mentorship.unmatch", user_id=mentee.id, other_id=mentor.id)

    printed = matchops("audit", task_id)

    assert printed.returncode == 0, printed.stderr
    (row,) = json.loads(printed.stdout)
    assert (row["task_name"], row["caller"], row["action"]) == (
        "mentorship.unmatch",
        "send_task",
        "mentorship.unmatch",
    )
    assert row["subject"]["mentee_id"] == mentee.id
