"""Periodic work: a slow safety tick behind the commit triggers, and the housekeeping.

Commits trigger sweeps and the relay as they happen (`workers.triggers`); the ticks
here only pick up what a lost trigger left behind, so they run every 10 s, not every
second. Expiry has no trigger (time alone makes it due): every 5 s keeps a request at
most that long past its timeout. A tick whose task has nothing waiting (no pending
request, no open match, no unpublished event) is not sent at all (`workers.beat`). Each
entry expires before its next tick, so a stopped fleet does not come back to a pile of
stale sweeps, and none of these tasks stores a result.
"""

from __future__ import annotations

from typing import Any

from core.context import CALLER_HEADER

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "relay-events": {
        "task": "events.publish",
        "schedule": 10.0,
        "options": {"expires": 9},
    },
    "reconcile": {
        "task": "maintenance.reconcile",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    "carpool-cleanup-invitations": {
        "task": "carpool.cleanup_invitations",
        "schedule": 3600.0,
        "options": {"expires": 3300},
    },
    "mentorship-expire-requests": {
        "task": "mentorship.expire",
        "schedule": 600.0,
        "options": {"expires": 540},
    },
    "peer-sweep": {
        "task": "peer.sweep",
        "schedule": 10.0,
        "options": {"expires": 9},
    },
    "peer-expire": {
        "task": "peer.expire",
        "schedule": 5.0,
        "options": {"expires": 4},
    },
}

# Every beat entry names beat as its caller, for the audit trail.
for _entry in BEAT_SCHEDULE.values():
    _entry["options"]["headers"] = {CALLER_HEADER: "beat"}
