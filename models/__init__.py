"""SQLAlchemy 2 typed models of every matchops table."""

from models.base import Base
from models.carpool import (
    CarpoolGroup,
    CarpoolNetwork,
    GroupMember,
    Invitation,
    Reservation,
    ReservationMatch,
    ReservationStats,
)
from models.mentorship import (
    Booking,
    MentorBlacklist,
    MentorMentee,
    MentorMenteeStats,
    Message,
    Score,
)
from models.peer import CollabSession, Match, MatchRequest, Question
from models.platform import OutboxEvent, TaskProgress, TaskRun
from models.users import User

__all__ = [
    "Base",
    "Booking",
    "CarpoolGroup",
    "CarpoolNetwork",
    "CollabSession",
    "GroupMember",
    "Invitation",
    "Match",
    "MatchRequest",
    "MentorBlacklist",
    "MentorMentee",
    "MentorMenteeStats",
    "Message",
    "OutboxEvent",
    "Question",
    "Reservation",
    "ReservationMatch",
    "ReservationStats",
    "Score",
    "TaskProgress",
    "TaskRun",
    "User",
]
