"""`carpool.group_deleted` through the real worker: cleanup, progress, rerun after a kill."""

from __future__ import annotations

import itertools
import os
import signal
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from celery.result import AsyncResult
from sqlalchemy import select

from api.app import create_app
from core.errors import NotFound
from core.settings import get_settings
from models import CarpoolGroup, GroupMember, Invitation, Reservation
from tests.api.support import SECRET, client_for, serving, wait_until_final
from tests.factories import next_id
from tests.factories_carpool import (
    cleanups_blocked_deleting_invitations,
    events_for,
    existing,
    holding_invitation,
    invite,
    make_group,
    make_member,
    make_members,
    make_network,
    make_reservation,
    recounted_stats,
    stored_stats,
)
from tests.support import queue_taken_from, run_task, running_worker, send, wait_for
from workers.app import app


def _chain_of_invitations(db, members):
    """One reservation per member; each member invites the next one."""
    reservations = [make_reservation(db, m) for m in members]
    return [invite(db, a, b) for a, b in itertools.pairwise(reservations)]


def test_disables_the_group_ends_memberships_and_cleans_up_former_members(worker, db):
    ours, partner = next_id(), next_id()
    make_network(db, ours, partner)
    group = make_group(db, enterprise_id=ours)
    still_shared = make_group(db)
    partner_group = make_group(db, enterprise_id=partner)
    alice = make_member(db, group, still_shared)
    bob = make_member(db, group, still_shared)
    carol = make_member(db, group)
    dave = make_member(db, partner_group)
    outsider_a, outsider_b = make_member(db, partner_group), make_member(db, partner_group)
    ra, rb, rc, rd = (make_reservation(db, u) for u in (alice, bob, carol, dave))
    kept = invite(db, ra, rb)
    gone_direct = invite(db, rc, ra)
    gone_network = invite(db, rd, rc)  # dave met carol only through the network
    untouched = invite(db, make_reservation(db, outsider_a), make_reservation(db, outsider_b))
    db.commit()

    result = run_task("carpool.group_deleted", group_id=group.id, batch_size=2)

    assert result == {
        "group_id": group.id,
        "group_disabled": True,
        "memberships_ended": 3,
        "members": 3,
        "batches": 2,
        "invitations_removed": 2,
        "matches_removed": 0,
        "reservations_touched": 3,
    }
    ids = [kept.id, gone_direct.id, gone_network.id, untouched.id]
    assert existing(db, Invitation, ids) == {kept.id, untouched.id}
    assert db.scalar(select(CarpoolGroup.disabled).where(CarpoolGroup.id == group.id)) is True
    statuses = set(db.scalars(select(GroupMember.status).where(GroupMember.group_id == group.id)))
    assert statuses == {"left"}
    events = events_for(db, "carpool.invitation.removed", "invitation_id", ids)
    assert {(e["invitation_id"], e["reason"], e["group_id"]) for e in events} == {
        (gone_direct.id, "group_deleted", group.id),
        (gone_network.id, "group_deleted", group.id),
    }
    touched = [ra.id, rc.id, rd.id]
    assert stored_stats(db, touched) == recounted_stats(db, touched)

    again = run_task("carpool.group_deleted", group_id=group.id, batch_size=2)
    assert (again["group_disabled"], again["memberships_ended"]) == (False, 0)
    assert (again["invitations_removed"], again["reservations_touched"]) == (0, 0)
    assert len(events_for(db, "carpool.invitation.removed", "invitation_id", ids)) == 2


@pytest.fixture
def api(monkeypatch) -> Iterator[httpx.Client]:
    """The HTTP API served for this test, with a client that may enqueue carpool tasks."""
    monkeypatch.setenv("AUTH_SECRET", SECRET)
    get_settings.cache_clear()
    try:
        with serving(create_app()) as url, client_for(url, scopes=["carpool.*"]) as http:
            yield http
    finally:
        get_settings.cache_clear()


def test_unknown_group_is_not_found(worker, api):
    with pytest.raises(NotFound) as error:
        run_task("carpool.group_deleted", group_id=next_id())
    assert error.value.status == 404

    answer = api.post(
        "/v1/tasks/carpool.group_deleted", json={"args": {"group_id": next_id()}, "wait": 30}
    ).json()
    assert answer["state"] == "FAILURE"
    assert answer["error"]["type"] == "NotFound"
    assert answer["error"]["status"] == 404


def test_progress_is_visible_in_the_task_state_while_batches_run(worker, api, db):
    group = make_group(db)
    members = make_members(db, 200, group)
    invitations = _chain_of_invitations(db, members)
    db.commit()
    # Member 150 is in the 16th batch of ten: the task stops there until released.
    with holding_invitation(invitations[150].id):
        posted = api.post(
            "/v1/tasks/carpool.group_deleted",
            json={"args": {"group_id": group.id, "batch_size": 10}},
        )
        assert posted.status_code == 202
        task_id = posted.json()["task_id"]
        wait_for(
            lambda: cleanups_blocked_deleting_invitations() == 1,
            what="the cleanup to reach the held row",
        )
        status = api.get(f"/v1/tasks/{task_id}").json()
        assert status["state"] == "STARTED"
        assert status["progress"] == {"done": 150, "total": 200}
        assert AsyncResult(task_id, app=app).info == {"progress": {"done": 150, "total": 200}}
    # The outcome of a task the API accepted is read where the API keeps it.
    answer = wait_until_final(api, task_id, timeout=60)["result"]
    assert answer["members"] == 200
    assert answer["batches"] == 20
    assert answer["invitations_removed"] == len(invitations)


def test_a_rerun_after_the_worker_is_killed_mid_way_finishes_the_cleanup_once(worker, db):
    group = make_group(db)
    members = make_members(db, 100, group)
    invitations = _chain_of_invitations(db, members)
    db.commit()
    invitation_ids = [i.id for i in invitations]

    # The session worker steps aside from the cascades queue, so only the victim runs it.
    with (
        queue_taken_from(worker, "cascades"),
        running_worker("carpool-victim", queues="cascades", concurrency=1) as victim,
    ):
        with holding_invitation(invitations[55].id):  # in the 6th batch of ten
            result = send("carpool.group_deleted", group_id=group.id, batch_size=10)
            wait_for(
                lambda: cleanups_blocked_deleting_invitations() == 1,
                what="the first run to block",
            )
            assert result.info == {"progress": {"done": 50, "total": 100}}
            (child,) = victim.child_pids()
            os.kill(child, signal.SIGKILL)
            wait_for(
                lambda: child not in victim.child_pids() and victim.child_pids(),
                what="a replacement child",
            )
            # The killed backend still waits on the row, holding the carpool lock,
            # until the row is released; the redelivered run queues behind it.
            assert result.state != "FAILURE"
        answer = result.get(timeout=60)

    assert answer["group_disabled"] is False  # the first run had disabled it
    assert answer["members"] == 100
    assert existing(db, Invitation, invitation_ids) == set()
    events = events_for(db, "carpool.invitation.removed", "invitation_id", invitation_ids)
    counts = Counter(e["invitation_id"] for e in events)
    assert set(counts) == set(invitation_ids)
    assert set(counts.values()) == {1}
    # The first run's five committed batches removed what the rerun did not.
    assert answer["invitations_removed"] == len(invitation_ids) - 50
    reservation_ids = list(
        db.scalars(select(Reservation.id).where(Reservation.user_id.in_([m.id for m in members])))
    )
    assert stored_stats(db, reservation_ids) == recounted_stats(db, reservation_ids)
