"""People, shared by all three domains."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Identity, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class User(Base):
    """A person: mentor, mentee or plain member (peer practice, carpool)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    email: Mapped[str] = mapped_column(Text, unique=True)
    display_name: Mapped[str] = mapped_column(Text, default="")
    role: Mapped[str] = mapped_column(Text, default="member")  # mentor | mentee | member
    date_joined: Mapped[datetime] = mapped_column(server_default=func.now())
    is_active: Mapped[bool] = mapped_column(default=True, server_default="true")
    # A mentor's own capacity; NULL means the MAX_MENTEES default applies.
    max_mentees: Mapped[int | None]
    mentor_available: Mapped[bool] = mapped_column(default=True, server_default="true")
    seeking_mentor: Mapped[bool] = mapped_column(default=False, server_default="false")
