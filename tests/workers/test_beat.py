"""Beat's scheduler against a database of its own: with nothing waiting it sends none of
its safety ticks; a pending request and an unpublished event bring them back."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from beat_schedule import BEAT_SCHEDULE
from core.outbox import emit_event
from core.settings import get_settings
from domain.peer.requests import create_request
from runtime.migrate import recreate_schema, upgrade_head
from tests.factories import make_user, unique
from tests.support import WorkerProcess, queue_taken_from, running_beat, wait_for
from workers.app import app

TICKED = {"peer.sweep", "peer.expire", "events.publish"}
TICK_QUEUES = ("sweeps", "events")


@contextmanager
def beat_on(database_url: str, log_path: Path) -> Iterator[None]:
    """Beat, logging at DEBUG (its skipped ticks too), against `database_url`."""
    with running_beat(log_path, "DEBUG", {"DATABASE_URL": database_url}):
        yield


def drop_queued_tasks() -> None:
    """Take whatever waits in the tick queues off the broker, unrun."""
    with app.connection_for_read() as connection:
        for name in TICK_QUEUES:
            app.amqp.queues[name](connection.default_channel).purge()


def test_an_idle_beat_sends_no_tick_until_work_waits(worker: WorkerProcess, tmp_path: Path):
    settings_url = make_url(get_settings().db_url)
    idle_url = settings_url.set(database=f"{settings_url.database}_idle").render_as_string(
        hide_password=False
    )
    recreate_schema(idle_url)
    upgrade_head(idle_url)
    log_path = tmp_path / "beat.log"

    # This beat's own log tells what it sent and skipped: the broker is shared with
    # every other process of the suite.
    def logged(pattern: str) -> set[str]:
        return set(re.findall(pattern, log_path.read_text(errors="replace")))

    def skipped() -> set[str]:
        return logged(r"nothing waits for ([\w.]+), tick skipped")

    def sent() -> set[str]:
        return logged(r"Sending due task \S+ \(([\w.]+)\)")

    with ExitStack() as stack:
        # The ticks this beat sends are left unrun: they are for its database, not ours.
        for queue in TICK_QUEUES:
            stack.enter_context(queue_taken_from(worker, queue))
        stack.callback(drop_queued_tasks)
        stack.enter_context(beat_on(idle_url, log_path))
        wait_for(lambda: skipped() >= TICKED, timeout=40, what="a skipped tick of each")
        assert not TICKED & sent()

        # A request waiting in a pool and an event not yet relayed: every tick has work.
        engine = create_engine(idle_url)
        with Session(engine) as session, session.begin():
            create_request(session, make_user(session).id, "Easy", unique("topic"))
            emit_event(session, "request.expired", {"request_id": 1})
        engine.dispose()
        wait_for(lambda: sent() >= TICKED, timeout=40, what="a tick of each")


def test_every_entry_expires_before_its_next_tick():
    # A stopped fleet must not come back to a pile of ticks all due at once.
    for name, entry in BEAT_SCHEDULE.items():
        assert entry["options"]["expires"] < entry["schedule"], name
