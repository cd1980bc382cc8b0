"""The web application's tables: users, and the events the application publishes about them."""

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Identity, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from notified_sa import EventMixin


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    welcomed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # set by the worker's handler


class Event(EventMixin, Base):
    __tablename__ = "events"  # trigger on channel "events" (EventMixin's default)
