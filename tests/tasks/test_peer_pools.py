"""Pool figures (`domain.peer.stats`, `matchops pools`) against the tables they summarise."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime

import numpy as np
import pytest
from sqlalchemy import func, select

from domain.peer.stats import PoolFigures, pool_figures
from models import Match, MatchRequest
from tests.factories import unique
from tests.factories_peer import backdate_request, make_request
from tests.runtime.commands import matchops
from tests.support import run_task


def figures_of_topic(db, topic: str) -> dict[str, PoolFigures]:
    db.rollback()  # a fresh snapshot, with the database's now()
    return {pool.difficulty: pool for pool in pool_figures(db) if pool.topic == topic}


def test_pool_figures_equal_the_table_counts(worker, db):
    topic = unique("topic")
    # Easy: three waiting 40, 20 and 5 s; a sweep pairs the two oldest.
    for age in (40, 20, 5):
        make_request(db, topic=topic, age_seconds=age)
    # Medium: one request past the matching timeout, which expiry takes.
    stale = make_request(db, topic=topic, difficulty="Medium")
    # Hard: one lonely request.
    make_request(db, topic=topic, difficulty="Hard", age_seconds=10)
    db.commit()
    backdate_request(db, stale.id, 61)
    run_task("peer.sweep", difficulty="Easy", topic=topic)
    run_task("peer.expire")

    figures = figures_of_topic(db, topic)
    now = db.scalar(select(func.now()))

    assert set(figures) == {"Easy", "Medium", "Hard"}
    for difficulty, pool in figures.items():
        in_pool = (MatchRequest.topic == topic, MatchRequest.difficulty == difficulty)
        pending = db.scalars(
            select(MatchRequest.created_at).where(*in_pool, MatchRequest.status == "pending")
        ).all()
        assert pool.waiting == len(pending)
        if pending:
            assert pool.oldest_wait_seconds == pytest.approx(
                (now - min(pending)).total_seconds(), abs=0.01
            )
        else:
            assert pool.oldest_wait_seconds is None
        waits = time_to_match(db, topic, difficulty)
        assert pool.matched == len(waits)
        if waits:
            assert pool.time_to_match_p50 == pytest.approx(np.percentile(waits, 50), abs=0.01)
            assert pool.time_to_match_p95 == pytest.approx(np.percentile(waits, 95), abs=0.01)
        expired = db.scalar(select(func.count()).where(*in_pool, MatchRequest.status == "expired"))
        assert pool.expired == expired
    assert (figures["Easy"].waiting, figures["Easy"].matched) == (1, 2)
    assert figures["Easy"].time_to_match_p50 == pytest.approx(30, abs=2)
    assert figures["Easy"].expiry_rate == 0
    assert (figures["Medium"].expired, figures["Medium"].expiry_rate) == (1, 1)
    assert (figures["Hard"].waiting, figures["Hard"].expiry_rate) == (1, None)


def time_to_match(db, topic: str, difficulty: str) -> list[float]:
    """Seconds from each request's creation to its match's, read row by row."""
    waits: list[float] = []
    for match in db.scalars(select(Match).where(Match.topic == topic)):
        for request_id in (match.request_a, match.request_b):
            request = db.get(MatchRequest, request_id)
            if request is not None and request.difficulty == difficulty:
                created: datetime = request.created_at
                waits.append((match.created_at - created).total_seconds())
    return waits


def test_matchops_pools_prints_the_same_figures(worker, db):
    topic = unique("topic")
    make_request(db, topic=topic, difficulty="Hard", age_seconds=10)
    db.commit()

    table = matchops("pools")
    as_json = matchops("pools", "--json")

    assert table.returncode == 0, table.stderr
    (line,) = [line for line in table.stdout.splitlines() if topic in line]
    assert line.split()[:3] == ["Hard", topic, "1"]
    assert as_json.returncode == 0, as_json.stderr
    (pool,) = [pool for pool in json.loads(as_json.stdout) if pool["topic"] == topic]
    expected = figures_of_topic(db, topic)["Hard"]
    assert pool == {
        **asdict(expected),
        "oldest_wait_seconds": pytest.approx(expected.oldest_wait_seconds, abs=5),
        "expiry_rate": None,
    }
