"""Periodic work. Each entry expires quickly so a stopped worker fleet does not come
back to a pile of stale sweeps; the next tick does the same work anyway."""

from __future__ import annotations

from typing import Any

from core.context import CALLER_HEADER

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "relay-events": {
        "task": "events.publish",
        "schedule": 1.0,
        "options": {"expires": 5},
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
        "schedule": 1.0,
        "options": {"expires": 2},
    },
    "peer-expire": {
        "task": "peer.expire",
        "schedule": 5.0,
        "options": {"expires": 5},
    },
}

# Every beat entry names beat as its caller, for the audit trail.
for _entry in BEAT_SCHEDULE.values():
    _entry["options"]["headers"] = {CALLER_HEADER: "beat"}
