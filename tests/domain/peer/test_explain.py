"""`peer.explain` against the real database, under a cap with little room: it names
exactly the requests the next sweep of the topic leaves waiting, then that sweep runs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import session_factory
from domain.peer.explain import Reason, explain_request
from domain.peer.sweep import sweep_topics
from models.peer import MatchRequest
from tests.factories import unique
from tests.factories_peer import cap_with_room, make_pool, make_request

STALE_AFTER = 150
RELAX_AFTER = 30
CAPPED = ["open_match_cap_reached"]


def reasons(
    db: Session, requests: list[MatchRequest], cap: int, relax_after: int | None = None
) -> list[list[Reason]]:
    """Each request's reasons, as `peer.explain` gives them with this cap."""
    return [
        explain_request(
            db, request.id, max_open_matches=cap, stale_after=STALE_AFTER, relax_after=relax_after
        )["reasons"]
        for request in requests
    ]


def sweep_and_read(
    db: Session, topic: str, cap: int, relax_after: int | None = None
) -> set[MatchRequest]:
    """Sweep the topic as a commit triggers it; the requests of it matched afterwards."""
    sweep_topics(
        session_factory(),
        topics=[topic],
        difficulty=None,
        max_open_matches=cap,
        confirm_seconds=120,
        stale_after=STALE_AFTER,
        relax_after=relax_after,
    )
    db.expire_all()
    return set(
        db.scalars(
            select(MatchRequest).where(
                MatchRequest.topic == topic, MatchRequest.status == "matched"
            )
        )
    )


def test_room_for_one_pair_goes_to_the_older_pair_of_another_difficulty(db):
    topic = unique("topic")
    older = make_pool(db, 2, topic=topic, difficulty="Hard")
    newer = [make_request(db, topic=topic, age_seconds=0) for _ in range(2)]
    db.commit()
    cap = cap_with_room(db, 1, STALE_AFTER)

    # The Easy pair has a partner in its pool; the cap lets the sweep keep only the Hard
    # pair, whose older request waited longer.
    assert reasons(db, older + newer, cap) == [[], [], CAPPED, CAPPED]
    assert sweep_and_read(db, topic, cap) == set(older)


def test_the_claim_of_each_pool_bounds_which_pairs_fit(db):
    topic = unique("topic")
    # Forty Hard requests waited longer than four hundred Easy ones.
    hard = [
        make_request(db, topic=topic, difficulty="Hard", age_seconds=900 - s) for s in range(40)
    ]
    easy = [make_request(db, topic=topic, age_seconds=400 - s) for s in range(400)]
    db.commit()
    cap = cap_with_room(db, 20, STALE_AFTER)

    answers = reasons(db, hard + easy, cap)

    # Room for twenty pairs: each pool claims its oldest requests in proportion to its
    # size (twenty Hard, fifty-four Easy), so the sweep keeps ten Hard pairs, then the
    # ten oldest Easy ones; not the twenty Hard pairs that waited longest.
    expected = {request.id for request in hard[:20] + easy[:20]}
    assert {r.id for r, reason in zip(hard + easy, answers, strict=True) if not reason} == expected
    assert {reason[0] for reason in answers if reason} == {"open_match_cap_reached"}
    assert {request.id for request in sweep_and_read(db, topic, cap)} == expected


def test_exact_pairs_take_the_room_before_an_older_relaxed_one(db):
    topic = unique("topic")
    overdue = make_request(db, topic=topic, difficulty="Medium", age_seconds=RELAX_AFTER + 9)
    next_door = make_request(db, topic=topic, difficulty="Hard", age_seconds=5)
    exact = [make_request(db, topic=topic, age_seconds=1) for _ in range(2)]
    db.commit()
    cap = cap_with_room(db, 1, STALE_AFTER)

    assert reasons(db, [overdue, next_door, *exact], cap, RELAX_AFTER) == [
        CAPPED,
        CAPPED,
        [],
        [],
    ]
    assert sweep_and_read(db, topic, cap, RELAX_AFTER) == set(exact)


def test_the_newer_side_of_a_relaxed_pair_has_a_partner(db):
    topic = unique("topic")
    overdue = make_request(db, topic=topic, difficulty="Medium", age_seconds=RELAX_AFTER + 9)
    # Alone in its pool and not overdue itself, but the overdue request next door takes it.
    next_door = make_request(db, topic=topic, difficulty="Hard", age_seconds=5)
    db.commit()
    cap = cap_with_room(db, 1, STALE_AFTER)

    assert reasons(db, [overdue, next_door], cap, RELAX_AFTER) == [[], []]
    assert reasons(db, [next_door], cap) == [["no_partner_in_pool"]]
    assert sweep_and_read(db, topic, cap, RELAX_AFTER) == {overdue, next_door}
