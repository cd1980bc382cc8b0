"""A Server in its own process, for fault tests: ``python -m tests.proc_worker URL TAG MODE [options]``.

It serves the ``events`` table (EventMixin) on channel ``events`` by calling ``Server.listen()`` in the main
thread, so SIGINT/SIGTERM take the real path. Every handler run inserts a row into ``handled(event_id, tag)`` in
its own transaction, so tests can count executions per event and per process. MODE:

* ``record``: record and succeed;
* ``block``: record, then block forever (to be killed with SIGKILL mid-handler);
* ``slow``: record, then take ``--sleep`` seconds (simulated work) and succeed.

``--group`` makes it a server of that subscriber group; ``--fail-every N`` makes the handler raise (after
recording) for every event whose id is a multiple of N. ``--transactional`` registers the handler with
``transactional=True``: it records in the Session notified-sa gives it, which commits with its success.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Session

from notified_sa import EventMixin, NotifiedConfig, Server


class Base(DeclarativeBase):
    pass


class Event(EventMixin, Base):
    __tablename__ = "events"


def setup_tables(engine: sa.Engine) -> None:
    """Create the events table (with trigger) and the handled table."""
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS handled (event_id bigint NOT NULL, tag text NOT NULL, "
            "at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("tag")
    parser.add_argument("mode", choices=["record", "block", "slow"])
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=5.0)
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--shutdown-timeout", type=float, default=10.0)
    parser.add_argument("--group", default=None)
    parser.add_argument("--start-from", default=None, choices=["now", "beginning"])
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--transactional", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"[{args.tag}] %(threadName)s %(levelname)s %(message)s")

    engine = sa.create_engine(args.url, pool_size=args.pool + 4)
    conf = NotifiedConfig(
        channel_select_timeout=args.poll,
        lease_seconds=args.lease,
        pool_size=args.pool,
        backoff_base=0.01,
        backoff_cap=0.05,
        shutdown_timeout=args.shutdown_timeout,
    )
    server = Server("events", engine, model=Event, conf=conf, group=args.group, start_from=args.start_from)

    record = sa.text("INSERT INTO handled (event_id, tag) VALUES (:id, :tag)")

    def handle(event: Event, session: Session | None = None) -> None:
        if session is not None:
            session.execute(record, {"id": event.id, "tag": args.tag})
        else:
            with engine.begin() as conn:
                conn.execute(record, {"id": event.id, "tag": args.tag})
        if args.fail_every and event.id % args.fail_every == 0:
            raise RuntimeError(f"event {event.id} fails in {args.tag} (--fail-every {args.fail_every})")
        if args.mode == "block":
            threading.Event().wait()
        elif args.mode == "slow":
            time.sleep(args.sleep)  # simulated work inside the handler

    if args.transactional:
        server.register_handler("job", handle, key="job", transactional=True)
    else:
        server.register_handler("job", lambda event: handle(event), key="job")

    def announce() -> None:
        if server.wait_ready(60):
            print("READY", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.listen()
    engine.dispose()
    print("EXITED CLEANLY", flush=True)


if __name__ == "__main__":
    main()
