"""The example project's models: one events table, as notified-sa's EventMixin defines it.

``env.py`` gives ``Base.metadata`` to autogenerate, so ``alembic revision --autogenerate`` compares the database
with these models, notify trigger included (through ``alembic_ext``).
"""

from sqlalchemy.orm import DeclarativeBase

from notified_sa import EventMixin


class Base(DeclarativeBase):
    pass


class Event(EventMixin, Base):
    __tablename__ = "events"
    __notify_channel__ = "events"  # the channel the trigger notifies and the Server listens on
