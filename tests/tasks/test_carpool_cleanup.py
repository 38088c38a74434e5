"""`carpool.cleanup_invitations` through the real worker, checked against the pure rule."""

from __future__ import annotations

import itertools
import random

from beat_schedule import BEAT_SCHEDULE
from domain.carpool.eligibility import Directory, Group, Membership, eligible
from models import Invitation, ReservationMatch
from models.carpool import MembershipStatus
from tests.factories import make_user, next_id
from tests.factories_carpool import (
    events_for,
    existing,
    ineligible_links,
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


def test_network_expansion_keeps_links_across_enterprises_of_one_network(worker, db):
    north, south, elsewhere = next_id(), next_id(), next_id()
    make_network(db, north, south)
    make_network(db, elsewhere)
    alice = make_member(db, make_group(db, enterprise_id=north))
    bob = make_member(db, make_group(db, enterprise_id=south))
    carol = make_member(db, make_group(db, enterprise_id=elsewhere))
    ra, rb, rc = (make_reservation(db, u) for u in (alice, bob, carol))
    across_network = invite(db, ra, rb)
    across_networks = invite(db, rc, rb)
    matched_across = match(db, rb, ra)
    matched_outside = match(db, ra, rc)
    db.commit()

    result = run_task("carpool.cleanup_invitations")

    assert result["invitations_removed"] >= 1
    assert existing(db, Invitation, [across_network.id, across_networks.id]) == {across_network.id}
    assert existing(db, ReservationMatch, [matched_across.id, matched_outside.id]) == {
        matched_across.id
    }
    (event,) = events_for(db, "carpool.invitation.removed", "invitation_id", [across_networks.id])
    assert (event["reason"], event["group_id"]) == ("cleanup", None)
    assert len(events_for(db, "carpool.match.removed", "match_id", [matched_outside.id])) == 1
    touched = [ra.id, rb.id, rc.id]
    assert stored_stats(db, touched) == recounted_stats(db, touched)


def test_only_links_of_searching_reservations_are_in_scope(worker, db):
    alice, bob = make_user(db), make_user(db)  # no shared group at all
    both_done = invite(
        db, make_reservation(db, alice, "completed"), make_reservation(db, bob, "cancelled")
    )
    one_searching = invite(
        db, make_reservation(db, alice, "matched"), make_reservation(db, bob, "searching")
    )
    db.commit()

    run_task("carpool.cleanup_invitations")

    assert existing(db, Invitation, [both_done.id, one_searching.id]) == {both_done.id}


def test_a_second_run_removes_nothing_of_ours(worker, db):
    alice, bob = make_user(db), make_user(db)
    invitation = invite(db, make_reservation(db, alice), make_reservation(db, bob))
    db.commit()

    run_task("carpool.cleanup_invitations")
    run_task("carpool.cleanup_invitations")

    assert existing(db, Invitation, [invitation.id]) == set()
    assert len(events_for(db, "carpool.invitation.removed", "invitation_id", [invitation.id])) == 1


def test_cleanup_agrees_with_the_pure_rule_on_a_random_directory(worker, db):
    rng = random.Random(20261122)
    enterprises = [next_id() for _ in range(5)]
    networks = []
    for _ in range(3):
        members = rng.sample(enterprises, rng.randint(1, 3))
        network_id = make_network(db, *members)
        networks += [(network_id, e) for e in members]
    groups = [
        make_group(db, enterprise_id=rng.choice([None, *enterprises]), disabled=rng.random() < 0.15)
        for _ in range(9)
    ]
    users = [make_user(db) for _ in range(24)]
    memberships = []
    for user in users:
        for group in rng.sample(groups, rng.randint(0, 3)):
            status = MembershipStatus.ACTIVE if rng.random() < 0.8 else MembershipStatus.LEFT
            join(db, user, group, status=status)
            memberships.append(Membership(group.id, user.id, status))
    reservations = [make_reservation(db, u) for u in users]
    reservations.append(make_reservation(db, users[0]))  # a user's two reservations
    invitations = {
        invite(db, a, b).id: (a.user_id, b.user_id)
        for a, b in itertools.permutations(reservations, 2)
    }
    matches = {
        match(db, a, b).id: (a.user_id, b.user_id)
        for a, b in itertools.combinations(reservations, 2)
        if rng.random() < 0.3
    }
    db.commit()
    directory = Directory.of(
        [Group(g.id, g.enterprise_id, g.disabled) for g in groups], memberships, networks
    )

    run_task("carpool.cleanup_invitations")

    def allowed(links: dict[int, tuple[int, int]]) -> set[int]:
        return {i for i, (a, b) in links.items() if eligible(directory, a, b)}

    assert existing(db, Invitation, invitations) == allowed(invitations)
    assert existing(db, ReservationMatch, matches) == allowed(matches)
    assert 0 < len(allowed(invitations)) < len(invitations)  # the draw exercises both sides
    assert ineligible_links(db, [u.id for u in users]) == []
    ids = [r.id for r in reservations]
    assert stored_stats(db, ids) == recounted_stats(db, ids)


def test_beat_runs_the_cleanup_hourly_and_drops_stale_ticks():
    (entry,) = [e for e in BEAT_SCHEDULE.values() if e["task"] == "carpool.cleanup_invitations"]
    assert entry["schedule"] == 3600.0
    assert 0 < entry["options"]["expires"] <= 3600
