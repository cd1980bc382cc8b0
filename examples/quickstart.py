"""notified-sa in one file: a model, a Server, a handler, an event published by committing a session.

    python examples/quickstart.py                                        # a throwaway PostgreSQL is started
    python examples/quickstart.py postgresql://USER:PASSWORD@HOST:5432/DBNAME
    NOTIFIED_DATABASE_URL=postgresql://... python examples/quickstart.py

Without a URL it starts a PostgreSQL through notified_sa.devdb (Docker if it answers, else the embedded server
from `pip install 'notified-sa[embedded]'`). It creates the table quickstart_events and drops it at the end.
"""

import sys
import threading

from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Session

from notified_sa import EventMixin, HandlerResult, HandlerStatus, Server
from notified_sa.devdb import database_url


class Base(DeclarativeBase):
    pass


class Event(EventMixin, Base):
    __tablename__ = "quickstart_events"
    __notify_channel__ = "quickstart"  # the channel the table's trigger notifies


def main() -> int:
    url = sys.argv[1] if len(sys.argv) > 1 else database_url("NOTIFIED_DATABASE_URL")
    engine = create_engine(url)
    Base.metadata.create_all(engine)  # the table, its indexes and its notify trigger (a real app uses Alembic)

    server = Server("quickstart", engine, model=Event)
    handled = threading.Event()

    @server.handler("user_signed_up", key="send_welcome")  # key: its entry in the event's results
    def send_welcome(event: Event) -> HandlerResult:
        print(f"handler: welcome user {event.payload['user_id']} (event {event.id}, attempt {event.attempts})")
        handled.set()
        return HandlerResult(HandlerStatus.SUCCESS, {"sent": True})

    try:
        with server:  # runs in background threads; leaving the block stops it cleanly
            with Session(engine) as session:
                event = Event(name="user_signed_up", payload={"user_id": 7})
                session.add(event)
                session.commit()  # publishing is committing: the event exists if and only if the commit happened
                event_id = event.id
            if not handled.wait(30):
                print("the handler did not run within 30 s", file=sys.stderr)
                return 1
        with Session(engine) as session:  # the outcome is stored on the event row
            stored = session.get(Event, event_id)
            assert stored is not None
            result = stored.results["send_welcome"]
            print(f"event {stored.id} {stored.status}: send_welcome {result['status']}, payload {result['payload']}")
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
