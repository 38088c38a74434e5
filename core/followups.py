"""What a transaction leaves for after its commit: the one after-commit mechanism.

Two kinds of work wait for the commit of the rows they are about, recorded on the
session (`session.info`) and run by one listener once the transaction has committed,
never before; a rolled-back transaction drops them:

- Follow-ups: work the writes made due (`Due`): a sweep of the topics that gained
  pending requests, a run of the outbox relay. The task that serves each is the one
  whose declaration names it (`followup=` in `workers.base`); the worker's sender
  (`workers.triggers`) sends those tasks, coalesced, so no worker can pick up a message
  before the rows it is about exist.
- Actions: writes to a store other than PostgreSQL that nobody may see before the rows
  they describe (a collaboration session's document in Redis). They run after the
  follow-ups, in the order recorded. A failure there (Redis down) fails the task after
  the commit; the retry finds the work done and writes again, and reconcile repairs
  what is left otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

PENDING = "matchops.after_commit"


class Due(StrEnum):
    """Work a commit can make due, for the task whose declaration serves it."""

    # New or requeued pending requests: a sweep of their topics.
    SWEEP = "sweep"
    # New outbox rows: a run of the relay.
    RELAY = "relay"


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


@dataclass
class AfterCommit:
    """What one transaction left for after its commit."""

    due: set[Due] = field(default_factory=set)
    # Topics whose pools gained pending requests, for the sweep of due topics.
    topics: set[str] = field(default_factory=set)
    actions: list[Callable[[], object]] = field(default_factory=list)


# Sends the follow-ups of a commit: the work due and the topics due for a sweep.
FollowupSender = Callable[[set[Due], set[str]], None]
# None until the worker's triggers install theirs: a commit's follow-ups then go nowhere.
_sender: FollowupSender | None = None


def send_followups_with(sender: FollowupSender) -> None:
    """Hand every commit's follow-ups to `sender` (the worker's triggers install one)."""
    global _sender
    _sender = sender


def _pending(session: Session) -> AfterCommit:
    pending: AfterCommit = session.info.setdefault(PENDING, AfterCommit())
    return pending


def sweep_due(session: Session, topic: str) -> None:
    """New or requeued pending requests in `topic`: after commit, the next sweep of due
    topics covers it."""
    pending = _pending(session)
    pending.due.add(Due.SWEEP)
    pending.topics.add(topic)


def relay_due(session: Session) -> None:
    """New outbox rows: run the relay after commit."""
    _pending(session).due.add(Due.RELAY)


def after_commit(session: Session, action: Callable[[], object]) -> None:
    """Run `action` once the session's transaction has committed (never on rollback)."""
    _pending(session).actions.append(action)


def take_followups(session: Session) -> AfterCommit:
    """What the session's transaction recorded for after its commit so far, removed from
    the session."""
    taken: AfterCommit = session.info.pop(PENDING, AfterCommit())
    return taken


def _run_after_commit(session: Session) -> None:
    pending = take_followups(session)
    if pending.due and _sender is not None:
        _sender(pending.due, pending.topics)
    for action in pending.actions:
        action()


def _drop_on_rollback(session: Session) -> None:
    take_followups(session)


event.listen(Session, "after_commit", _run_after_commit)
event.listen(Session, "after_rollback", _drop_on_rollback)
