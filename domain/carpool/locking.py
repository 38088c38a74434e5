"""The one lock every carpool cleanup and statistics rebuild holds while it works.

Cleanups are serialised by a single transaction-level advisory lock instead of per-user
locks. Whether a link survives depends on the memberships of *both* its users, so a
cleanup reads the memberships of people it does not change; with per-user locks two
cleanups that each end one membership could each judge the other's pair still eligible
(write skew) and both keep a link that neither membership justifies any more. Taken
before anything is read, the domain lock makes every cleanup see the membership changes
of all cleanups committed before it, and cleanups never wait on each other's rows, so
they cannot deadlock among themselves. Each holds it for one short transaction (a single
member, or one bounded batch of a deleted group), so waiting on it costs milliseconds.
The statistics rebuild takes it too: a rebuild counting from an older snapshot would
otherwise overwrite the fresher counts a concurrent cleanup had just written.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.locks import hold_advisory_lock

CARPOOL_LINKS_LOCK = "matchops.carpool.links"


def lock_carpool_links(session: Session) -> None:
    """Wait for, then hold until commit, the carpool cleanup lock."""
    hold_advisory_lock(session, CARPOOL_LINKS_LOCK)
