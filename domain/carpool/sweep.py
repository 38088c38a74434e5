"""The periodic cleanup of every searching reservation's invitations and matches."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from core.audit import record_audit
from domain.carpool.links import SEARCHING_RESERVATIONS, Cause, remove_ineligible_links
from domain.carpool.locking import lock_carpool_links


def clean_up_searching_reservations(session: Session) -> dict[str, Any]:
    """Remove every invitation and match of a searching reservation between ineligible users.

    Catches what no membership event announced (a membership ended by hand, a network
    changed). A link counts when either of its reservations is searching. What it
    removed is audited.
    """
    lock_carpool_links(session)
    counts = remove_ineligible_links(session, SEARCHING_RESERVATIONS, Cause("cleanup")).as_dict()
    record_audit(
        session, "carpool.cleanup_invitations", {"reservation_status": "searching"}, counts
    )
    return counts
