"""Task declarations carry their rules: the routes, the beat schedule and the follow-ups a
commit sends are derived from them."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from beat_schedule import BEAT_SCHEDULE
from core.context import CALLER_HEADER
from core.followups import Due, Followup
from workers.app import app
from workers.base import NoArgs, task
from workers.specs import Periodic, declared, import_task_modules
from workers.triggers import followups_of

# Where these tasks went before their declarations named their queues, and the ticks beat
# sent before the tasks declared them: unchanged.
EXPECTED_QUEUES = {
    "peer.request": "interactive",
    "peer.sweep": "sweeps",
    "peer.expire": "sweeps",
    "mentorship.assign": "sweeps",
    "mentorship.expire": "sweeps",
    "mentorship.unmatch": "cascades",
    "mentorship.rebuild_stats": "maintenance",
    "mentorship.backfill": "maintenance",
    "mentorship.rank": "interactive",
    "carpool.member_left": "cascades",
    "carpool.group_deleted": "cascades",
    "carpool.cleanup_invitations": "cascades",
    "carpool.rebuild_stats": "maintenance",
    "maintenance.reconcile": "maintenance",
    "events.publish": "events",
}
EXPECTED_TICKS = {
    "relay-events": ("events.publish", 10.0, 9),
    "reconcile": ("maintenance.reconcile", 60.0, 55),
    "carpool-cleanup-invitations": ("carpool.cleanup_invitations", 3600.0, 3300),
    "mentorship-expire-requests": ("mentorship.expire", 600.0, 540),
    "peer-sweep": ("peer.sweep", 10.0, 9),
    "peer-expire": ("peer.expire", 5.0, 4),
}


def test_celery_routes_each_task_to_the_queue_its_declaration_names():
    import_task_modules()
    for name, spec in declared().items():
        assert app.amqp.router.route({}, name, (), {})["queue"].name == spec.queue, name
    assert {name: declared()[name].queue for name in EXPECTED_QUEUES} == EXPECTED_QUEUES


def test_the_beat_schedule_is_the_declared_ticks_sent_as_beat():
    ticks = {
        entry: (tick["task"], tick["schedule"], tick["options"]["expires"])
        for entry, tick in BEAT_SCHEDULE.items()
    }
    assert {entry: ticks.get(entry) for entry in EXPECTED_TICKS} == EXPECTED_TICKS
    assert all(
        tick["options"]["headers"] == {CALLER_HEADER: "beat"} for tick in BEAT_SCHEDULE.values()
    )
    assert app.conf.beat_schedule == BEAT_SCHEDULE


def test_a_commit_sends_the_tasks_declared_to_serve_what_it_made_due():
    assert followups_of([Due.SWEEP]) == [Followup("peer.sweep", (("due", True),))]
    assert followups_of([Due.RELAY]) == [Followup("events.publish")]


def test_a_tick_that_outlives_its_interval_is_refused():
    with pytest.raises(ValueError, match="below its interval"):
        Periodic("too-long", every=5.0, expires=5.0)


def test_a_task_on_a_queue_no_worker_consumes_is_refused():
    def body(session: Session, args: NoArgs) -> dict[str, int]:
        """Never declared."""
        return {}

    with pytest.raises(ValueError, match="nowhere"):
        task("test.nowhere", args=NoArgs, result=dict[str, int], queue="nowhere")(body)
    assert "test.nowhere" not in declared()
