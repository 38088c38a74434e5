"""The eligibility rule as a pure function: groups, enterprises and networks."""

from __future__ import annotations

from domain.carpool.eligibility import Directory, Group, Membership, Reach, eligible
from models.carpool import MembershipStatus

ALICE, BOB, CAROL = 1, 2, 3


def test_active_members_of_one_enabled_group_are_eligible():
    d = Directory.of([Group(10)], [Membership(10, ALICE), Membership(10, BOB)])
    assert eligible(d, ALICE, BOB)
    assert eligible(d, BOB, ALICE)


def test_members_of_different_groups_without_networks_are_not():
    d = Directory.of([Group(10), Group(11)], [Membership(10, ALICE), Membership(11, BOB)])
    assert not eligible(d, ALICE, BOB)


def test_a_member_who_left_is_not_eligible():
    d = Directory.of(
        [Group(10)], [Membership(10, ALICE), Membership(10, BOB, status=MembershipStatus.LEFT)]
    )
    assert not eligible(d, ALICE, BOB)


def test_a_disabled_group_connects_nobody():
    d = Directory.of([Group(10, disabled=True)], [Membership(10, ALICE), Membership(10, BOB)])
    assert not eligible(d, ALICE, BOB)


def test_enterprises_in_one_network_connect_their_groups():
    d = Directory.of(
        [Group(10, enterprise_id=100), Group(11, enterprise_id=200)],
        [Membership(10, ALICE), Membership(11, BOB)],
        networks=[(7, 100), (7, 200)],
    )
    assert eligible(d, ALICE, BOB)


def test_enterprises_in_different_networks_do_not():
    d = Directory.of(
        [Group(10, enterprise_id=100), Group(11, enterprise_id=200)],
        [Membership(10, ALICE), Membership(11, BOB)],
        networks=[(7, 100), (8, 200)],
    )
    assert not eligible(d, ALICE, BOB)


def test_an_enterprise_outside_every_network_only_connects_its_own_groups():
    d = Directory.of(
        [Group(10, enterprise_id=100), Group(11, enterprise_id=100)],
        [Membership(10, ALICE), Membership(11, BOB)],
    )
    assert not eligible(d, ALICE, BOB)


def test_a_group_without_an_enterprise_only_counts_directly():
    d = Directory.of(
        [Group(10), Group(11, enterprise_id=200)],
        [Membership(10, ALICE), Membership(11, BOB)],
        networks=[(7, 200)],
    )
    assert not eligible(d, ALICE, BOB)


def test_a_disabled_group_does_not_carry_its_network():
    d = Directory.of(
        [Group(10, enterprise_id=100, disabled=True), Group(11, enterprise_id=200)],
        [Membership(10, ALICE), Membership(11, BOB)],
        networks=[(7, 100), (7, 200)],
    )
    assert not eligible(d, ALICE, BOB)


def test_a_second_shared_group_keeps_two_users_eligible():
    d = Directory.of(
        [Group(10), Group(11)],
        [
            Membership(10, ALICE, status=MembershipStatus.LEFT),
            Membership(10, BOB),
            Membership(11, ALICE),
            Membership(11, BOB),
        ],
    )
    assert eligible(d, ALICE, BOB)


def test_eligibility_is_not_transitive():
    d = Directory.of(
        [Group(10), Group(11)],
        [Membership(10, ALICE), Membership(10, BOB), Membership(11, BOB), Membership(11, CAROL)],
    )
    assert eligible(d, ALICE, BOB) and eligible(d, BOB, CAROL)
    assert not eligible(d, ALICE, CAROL)


def test_a_user_is_eligible_for_themself_even_without_groups():
    assert eligible(Directory.of([], []), ALICE, ALICE)


def test_reach_lists_enabled_groups_and_their_networks():
    d = Directory.of(
        [Group(10, enterprise_id=100), Group(11, enterprise_id=200, disabled=True), Group(12)],
        [
            Membership(10, ALICE),
            Membership(11, ALICE),
            Membership(12, ALICE, status=MembershipStatus.LEFT),
        ],
        networks=[(7, 100), (8, 100), (9, 200)],
    )
    assert d.reach(ALICE) == Reach(frozenset({10}), frozenset({7, 8}))
    assert d.reach(BOB) == Reach(frozenset(), frozenset())
