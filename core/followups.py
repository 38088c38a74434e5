"""Follow-up work a transaction makes due: a sweep of a topic, a run of the outbox relay.

Domain code records what its writes made due in `session.info`; the worker sends the
tasks once the transaction has committed (`workers.triggers`), never before, so no
worker can pick up a message before the rows it is about exist. A rolled-back
transaction sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

FOLLOWUPS = "matchops.followups"


@dataclass(frozen=True)
class Followup:
    """A task to send after commit, with its JSON keyword arguments as sorted pairs."""

    task: str
    kwargs: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        """Names the follow-up: one is queued per key at a time."""
        return ":".join([self.task, *(f"{name}={value}" for name, value in self.kwargs)])

    def arguments(self) -> dict[str, Any]:
        """The task's keyword arguments."""
        return dict(self.kwargs)


def sweep_followup(topic: str, difficulty: str | None = None) -> Followup:
    """A `peer.sweep` of one topic (every difficulty of it unless one is named)."""
    kwargs = {"topic": topic} if difficulty is None else {"difficulty": difficulty, "topic": topic}
    return Followup("peer.sweep", tuple(sorted(kwargs.items())))


RELAY = Followup("events.publish")


def add_followup(session: Session, followup: Followup) -> None:
    """Send `followup` once this session's transaction commits."""
    session.info.setdefault(FOLLOWUPS, set()).add(followup)


def sweep_due(session: Session, topic: str) -> None:
    """New or requeued pending requests in `topic`: sweep it after commit."""
    add_followup(session, sweep_followup(topic))


def relay_due(session: Session) -> None:
    """New outbox rows: run the relay after commit."""
    add_followup(session, RELAY)


def take_followups(session: Session) -> set[Followup]:
    """The follow-ups recorded so far, removed from the session."""
    followups: set[Followup] = session.info.pop(FOLLOWUPS, set())
    return followups
