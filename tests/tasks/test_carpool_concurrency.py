"""Overlapping cleanups running at once on several worker processes."""

from __future__ import annotations

import itertools
import random

from sqlalchemy import select

from domain.carpool.eligibility import Directory, Group, Membership, eligible
from models import CarpoolGroup, GroupMember, Invitation, ReservationMatch
from tests.factories import make_user, next_id
from tests.factories_carpool import (
    cleanups_blocked_deleting_invitations,
    cleanups_queued_for_the_carpool_lock,
    existing,
    holding_invitation,
    ineligible_links,
    invite,
    join,
    make_group,
    make_network,
    make_reservation,
    match,
    recounted_stats,
    stored_stats,
)
from tests.support import running_worker, send, wait_for


def _directory(db, group_ids, user_ids, networks) -> Directory:
    groups = db.execute(
        select(CarpoolGroup.id, CarpoolGroup.enterprise_id, CarpoolGroup.disabled).where(
            CarpoolGroup.id.in_(group_ids)
        )
    ).all()
    memberships = db.execute(
        select(GroupMember.group_id, GroupMember.user_id, GroupMember.status).where(
            GroupMember.user_id.in_(user_ids)
        )
    ).all()
    return Directory.of(
        [Group(*g) for g in groups], [Membership(*m) for m in memberships], networks
    )


def test_overlapping_cleanups_at_once_leave_exactly_the_eligible_links(worker, db):
    rng = random.Random(7)
    north, south = next_id(), next_id()
    network_id = make_network(db, north, south)
    groups = [
        make_group(db, enterprise_id=north),
        make_group(db, enterprise_id=south),
        make_group(db),
        make_group(db),
        make_group(db, enterprise_id=north),
    ]
    users = [make_user(db) for _ in range(36)]
    for user in users:
        join(db, user, *rng.sample(groups, rng.randint(1, 3)))
    reservations = [make_reservation(db, u) for u in users]
    invitations = {
        invite(db, a, b).id: (a, b)
        for a, b in itertools.permutations(reservations, 2)
        if rng.random() < 0.5
    }
    matches = {
        match(db, a, b).id: (a, b)
        for a, b in itertools.combinations(reservations, 2)
        if rng.random() < 0.3
    }
    db.commit()
    memberships = db.execute(
        select(GroupMember.group_id, GroupMember.user_id).where(
            GroupMember.user_id.in_([u.id for u in users])
        )
    ).all()
    leaving = rng.sample(memberships, 18)

    with running_worker("carpool-extra", concurrency=2):
        results = [send("carpool.member_left", group_id=g, user_id=u) for g, u in leaving]
        results.insert(6, send("carpool.group_deleted", group_id=groups[3].id, batch_size=4))
        results.insert(12, send("carpool.group_deleted", group_id=groups[0].id, batch_size=5))
        # Two whole-table cleanups in batches of a few reservations, interleaved with
        # everything else between their batches.
        results.insert(3, send("carpool.cleanup_invitations", batch_size=5))
        results.insert(10, send("carpool.cleanup_invitations", batch_size=7))
        answers = [r.get(timeout=120) for r in results]

    assert all(isinstance(a, dict) for a in answers)
    assert all(answers[i]["batches"] > 1 for i in (3, 10))
    user_ids = [u.id for u in users]
    final = _directory(
        db, [g.id for g in groups], user_ids, [(network_id, north), (network_id, south)]
    )
    expected_invitations = {
        i for i, (a, b) in invitations.items() if eligible(final, a.user_id, b.user_id)
    }
    expected_matches = {i for i, (a, b) in matches.items() if eligible(final, a.user_id, b.user_id)}
    assert existing(db, Invitation, invitations) == expected_invitations
    assert existing(db, ReservationMatch, matches) == expected_matches
    assert len(expected_invitations) < len(invitations)  # the cleanups did remove links
    assert ineligible_links(db, user_ids) == []

    # Every reservation that lost a link had its statistics rebuilt, to a true count.
    lost = {
        side.id
        for links, kept in ((invitations, expected_invitations), (matches, expected_matches))
        for i, pair in links.items()
        if i not in kept
        for side in pair
    }
    stored = stored_stats(db, [r.id for r in reservations])
    assert lost <= set(stored)
    assert stored == recounted_stats(db, stored)


def test_two_leavers_each_ending_half_of_what_joined_them_lose_their_link(worker, db):
    # Alice and Bob share two groups. Alice leaves one while Bob leaves the other: each
    # cleanup alone still sees the other group joining them, so a cleanup that judged
    # eligibility before the other's membership change committed would keep the link.
    first, second = make_group(db), make_group(db)
    alice, bob = make_user(db), make_user(db)
    join(db, alice, first, second)
    join(db, bob, first, second)
    carol = make_user(db)
    join(db, carol, first)
    ra, rb, rc = (make_reservation(db, u) for u in (alice, bob, carol))
    between_them = invite(db, ra, rb)
    held = invite(db, rc, ra)
    db.commit()

    # Alice's cleanup stops mid-transaction on the held row, after ending her membership.
    with holding_invitation(held.id):
        alice_leaves = send("carpool.member_left", group_id=first.id, user_id=alice.id)
        wait_for(
            lambda: cleanups_blocked_deleting_invitations() == 1,
            what="alice's cleanup to block",
        )
        bob_leaves = send("carpool.member_left", group_id=second.id, user_id=bob.id)
        wait_for(
            lambda: bob_leaves.ready() or cleanups_queued_for_the_carpool_lock() == 1,
            what="bob's cleanup to queue behind alice's",
        )
    alice_leaves.get(timeout=60)
    bob_leaves.get(timeout=60)

    assert existing(db, Invitation, [between_them.id, held.id]) == set()
    assert ineligible_links(db, [alice.id, bob.id, carol.id]) == []
