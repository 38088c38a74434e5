"""Periodic work: a slow safety tick behind the commit triggers, and the housekeeping.

Commits trigger sweeps and the relay as they happen (`workers.triggers`); the ticks
only pick up what a lost trigger left behind, so they run every 10 s, not every second.
Expiry has no trigger (time alone makes it due): every 5 s keeps a request at most that
long past its timeout. A tick whose task has nothing waiting (no pending request, no
open match, no unpublished event) is not sent at all (`workers.beat`). Each entry
expires before its next tick, so a stopped fleet does not come back to a pile of stale
sweeps, and none of these tasks stores a result.

Each tick is declared on its task (`periodic=` in `tasks/`, see `workers.specs`); this
module gathers them into Celery's beat schedule, the one `matchops beat` runs.
"""

from __future__ import annotations

from typing import Any

from workers.specs import beat_schedule, import_task_modules

import_task_modules()

BEAT_SCHEDULE: dict[str, dict[str, Any]] = beat_schedule()
