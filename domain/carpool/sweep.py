"""The periodic cleanup of every searching reservation's invitations and matches."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.audit import record_audit
from core.context import TaskContext, attach_context
from domain.carpool.links import (
    Cause,
    Removal,
    RemovalResult,
    remove_ineligible_links,
    reservations_by_id,
)
from domain.carpool.locking import lock_carpool_links
from models.carpool import Reservation, ReservationStatus


class CleanupResult(RemovalResult):
    """The periodic cleanup: searching reservations checked, in how many batches."""

    reservations: int
    batches: int


def next_searching(session: Session, after_id: int, limit: int) -> list[int]:
    """Ids of the next `limit` searching reservations after `after_id`, in id order."""
    return list(
        session.scalars(
            select(Reservation.id)
            .where(Reservation.status == ReservationStatus.SEARCHING, Reservation.id > after_id)
            .order_by(Reservation.id)
            .limit(limit)
        )
    )


def clean_up_searching_reservations(
    sessions: sessionmaker[Session],
    batch_size: int,
    progress: Callable[[int, int], None],
    context: TaskContext | None = None,
) -> CleanupResult:
    """Remove every invitation and match of a searching reservation between ineligible users.

    Catches what no membership event announced (a membership ended by hand, a network
    changed). A link counts when either of its reservations is searching. The
    reservations are walked in id order, `batch_size` per transaction, each batch under
    the carpool lock: a membership cleanup waits for one batch at most, never for the
    whole table. Killed part-way, a rerun walks every batch again and finds only what is
    left to remove. Each batch that removed something is audited in its transaction.
    """
    with sessions.begin() as session:
        total = int(
            session.scalar(
                select(func.count())
                .select_from(Reservation)
                .where(Reservation.status == ReservationStatus.SEARCHING)
            )
            or 0
        )
    progress(0, total)
    removal = Removal()
    done, batches, cursor = 0, 0, 0
    while True:
        with sessions.begin() as session:
            lock_carpool_links(attach_context(session, context))
            ids = next_searching(session, cursor, batch_size)
            if ids:
                removed = remove_ineligible_links(
                    session, reservations_by_id(ids), Cause("cleanup")
                )
                removal.add(removed)
                record_audit(
                    session,
                    "carpool.cleanup_invitations",
                    {
                        "reservation_status": ReservationStatus.SEARCHING,
                        "reservations": [ids[0], ids[-1]],
                    },
                    removed.as_dict(),
                )
        if not ids:
            break
        done, batches, cursor = done + len(ids), batches + 1, ids[-1]
        progress(done, total)
    return {"reservations": done, "batches": batches, **removal.as_dict()}
