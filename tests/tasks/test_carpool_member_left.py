"""`carpool.member_left` through the real worker."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.errors import NotFound
from models import GroupMember, Invitation, ReservationMatch
from tests.factories import make_user, next_id
from tests.factories_carpool import (
    events_for,
    existing,
    invite,
    join,
    make_group,
    make_member,
    make_network,
    make_reservation,
    match,
    recounted_stats,
    stored_stats,
)
from tests.support import run_task


def test_removes_invitations_both_ways_and_matches_but_keeps_a_second_shared_group(worker, db):
    group, other_group = make_group(db), make_group(db)
    alice = make_member(db, group, other_group)
    bob = make_member(db, group)
    carol = make_member(db, group, other_group)
    ra, rb, rc = (make_reservation(db, u) for u in (alice, bob, carol))
    alice_to_bob, bob_to_alice = invite(db, ra, rb), invite(db, rb, ra)
    alice_to_carol = invite(db, ra, rc)
    bob_to_carol = invite(db, rb, rc)
    alice_bob = match(db, rb, ra)
    carol_alice = match(db, rc, ra)
    db.commit()

    result = run_task("carpool.member_left", group_id=group.id, user_id=alice.id)

    assert result == {
        "membership_ended": True,
        "invitations_removed": 2,
        "matches_removed": 1,
        "reservations_touched": 2,
    }
    remaining = existing(
        db, Invitation, [alice_to_bob.id, bob_to_alice.id, alice_to_carol.id, bob_to_carol.id]
    )
    assert remaining == {alice_to_carol.id, bob_to_carol.id}
    assert existing(db, ReservationMatch, [alice_bob.id, carol_alice.id]) == {carol_alice.id}
    status = db.scalar(
        select(GroupMember.status).where(
            GroupMember.group_id == group.id, GroupMember.user_id == alice.id
        )
    )
    assert status == "left"

    removed = events_for(
        db, "carpool.invitation.removed", "invitation_id", [alice_to_bob.id, bob_to_alice.id]
    )
    assert sorted(e["invitation_id"] for e in removed) == sorted([alice_to_bob.id, bob_to_alice.id])
    by_id = {e["invitation_id"]: e for e in removed}
    assert by_id[alice_to_bob.id] == {
        "invitation_id": alice_to_bob.id,
        "reservation_id": ra.id,
        "offer_id": rb.id,
        "reservation_user_id": alice.id,
        "offer_user_id": bob.id,
        "reason": "member_left",
        "group_id": group.id,
    }
    (match_event,) = events_for(db, "carpool.match.removed", "match_id", [alice_bob.id])
    assert match_event["reservation_id"] == rb.id
    assert match_event["matched_reservation_id"] == ra.id
    assert match_event["matched_user_id"] == alice.id

    assert stored_stats(db, [ra.id, rb.id]) == recounted_stats(db, [ra.id, rb.id])
    assert stored_stats(db, [ra.id]) == {ra.id: (1, 0, 1)}


def test_keeps_links_justified_through_an_enterprise_network(worker, db):
    ours, partner, outsider = next_id(), next_id(), next_id()
    make_network(db, ours, partner)
    make_network(db, outsider)
    group = make_group(db)
    alice = make_member(db, group, make_group(db, enterprise_id=ours))
    bob = make_member(db, group, make_group(db, enterprise_id=partner))
    dave = make_member(db, group, make_group(db, enterprise_id=outsider))
    ra, rb, rd = (make_reservation(db, u) for u in (alice, bob, dave))
    through_network = invite(db, ra, rb)
    outside_network = invite(db, rd, ra)
    db.commit()

    result = run_task("carpool.member_left", group_id=group.id, user_id=alice.id)

    assert result["invitations_removed"] == 1
    assert existing(db, Invitation, [through_network.id, outside_network.id]) == {
        through_network.id
    }


def test_a_group_without_enterprise_does_not_expand_through_networks(worker, db):
    enterprise = next_id()
    make_network(db, enterprise)
    group = make_group(db)
    alice = make_member(db, group, make_group(db))  # a second group, no enterprise
    bob = make_member(db, group, make_group(db, enterprise_id=enterprise))
    invitation = invite(db, make_reservation(db, alice), make_reservation(db, bob))
    db.commit()

    run_task("carpool.member_left", group_id=group.id, user_id=alice.id)

    assert existing(db, Invitation, [invitation.id]) == set()


def test_a_second_run_removes_nothing_and_emits_nothing(worker, db):
    group = make_group(db)
    alice, bob = make_member(db, group), make_member(db, group)
    ra, rb = make_reservation(db, alice), make_reservation(db, bob)
    invitation = invite(db, ra, rb)
    matched = match(db, ra, rb)
    db.commit()

    first = run_task("carpool.member_left", group_id=group.id, user_id=alice.id)
    second = run_task("carpool.member_left", group_id=group.id, user_id=alice.id)

    assert (first["invitations_removed"], first["matches_removed"]) == (1, 1)
    assert second == {
        "membership_ended": False,
        "invitations_removed": 0,
        "matches_removed": 0,
        "reservations_touched": 0,
    }
    assert len(events_for(db, "carpool.invitation.removed", "invitation_id", [invitation.id])) == 1
    assert len(events_for(db, "carpool.match.removed", "match_id", [matched.id])) == 1


def test_cleans_up_after_a_membership_a_sibling_service_already_ended(worker, db):
    group = make_group(db)
    alice = make_member(db, group, status="left")
    bob = make_member(db, group)
    invitation = invite(db, make_reservation(db, bob), make_reservation(db, alice))
    db.commit()

    result = run_task("carpool.member_left", group_id=group.id, user_id=alice.id)

    assert result["membership_ended"] is False
    assert result["invitations_removed"] == 1
    assert existing(db, Invitation, [invitation.id]) == set()


def test_links_of_cancelled_and_completed_reservations_are_cleaned_too(worker, db):
    group = make_group(db)
    alice, bob = make_member(db, group), make_member(db, group)
    old = invite(
        db, make_reservation(db, alice, "completed"), make_reservation(db, bob, "cancelled")
    )
    db.commit()

    run_task("carpool.member_left", group_id=group.id, user_id=bob.id)

    assert existing(db, Invitation, [old.id]) == set()


def test_unknown_group_or_user_is_not_found(worker, db):
    user = make_user(db)
    group = make_group(db)
    join(db, user, group)
    db.commit()

    with pytest.raises(NotFound) as missing_group:
        run_task("carpool.member_left", group_id=next_id(), user_id=user.id)
    assert missing_group.value.status == 404
    assert "Group" in str(missing_group.value)
    with pytest.raises(NotFound, match="User"):
        run_task("carpool.member_left", group_id=group.id, user_id=next_id())
