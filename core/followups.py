"""Follow-up work a transaction makes due: a sweep of its topics, a run of the outbox relay.

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
DUE_TOPICS = "matchops.due_topics"


@dataclass(frozen=True)
class Followup:
    """A task to send after commit, with its JSON keyword arguments as sorted pairs."""

    task: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """Names the follow-up: one is queued per key at a time."""
        return ":".join([self.task, *(f"{name}={value}" for name, value in self.kwargs)])

    def arguments(self) -> dict[str, Any]:
        """The task's keyword arguments."""
        return dict(self.kwargs)


# One `peer.sweep` of every topic that commits made due while it waited to start: under
# load one sweep covers the topics of many commits, so sweeps per request fall as the
# rate rises; in a quiet system it covers the one topic of the one commit.
SWEEP_DUE = Followup("peer.sweep", (("due", True),))
RELAY = Followup("events.publish")


def sweep_of(topic: str) -> Followup:
    """A sweep of one topic's pools: how a sweep that found a pool of the topic held by
    another comes back to it later."""
    return Followup("peer.sweep", (("topic", topic),))


def add_followup(session: Session, followup: Followup) -> None:
    """Send `followup` once this session's transaction commits."""
    session.info.setdefault(FOLLOWUPS, set()).add(followup)


def sweep_due(session: Session, topic: str) -> None:
    """New or requeued pending requests in `topic`: after commit, the next sweep of due
    topics covers it."""
    add_followup(session, SWEEP_DUE)
    session.info.setdefault(DUE_TOPICS, set()).add(topic)


def relay_due(session: Session) -> None:
    """New outbox rows: run the relay after commit."""
    add_followup(session, RELAY)


def take_followups(session: Session) -> tuple[set[Followup], set[str]]:
    """The follow-ups and the topics due for a sweep recorded so far, removed from the
    session."""
    followups: set[Followup] = session.info.pop(FOLLOWUPS, set())
    topics: set[str] = session.info.pop(DUE_TOPICS, set())
    return followups, topics
