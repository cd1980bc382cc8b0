"""The mailer service: a receipt email for every paid order, in the subscriber group ``mailer``.

    NOTIFIED_DATABASE_URL=postgresql://... notified-sa serve mailer:make_server      # in this directory

It gets every ``order_paid`` event too, independently of billing: its own progress, retries and dead events.
"""

import logging
import os
from collections.abc import Callable
from typing import Any

from models import Event, Receipt
from sqlalchemy import Engine, create_engine
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from notified_sa import HandlerResult, HandlerStatus, Server


def receipt_handler(engine: Engine) -> Callable[[Any], HandlerResult]:
    """The handler for ``order_paid``: "send" the receipt once and record it."""

    def send_receipt(event: Event) -> HandlerResult:
        order_id = event.payload["order_id"]
        with Session(engine) as session, session.begin():
            stmt = insert(Receipt).values(order_id=order_id, sent_to=event.payload["email"])
            sent = session.execute(
                stmt.on_conflict_do_nothing(index_elements=[Receipt.order_id]).returning(Receipt.order_id)
            )
            # a real mailer sends the email here, only when the row was new (sent.first() is not None)
            first = sent.first() is not None
        return HandlerResult(HandlerStatus.SUCCESS, {"to": event.payload["email"], "first_delivery": first})

    return send_receipt


def make_server(database_url: str | None = None) -> Server:
    """The mailer service's Server, on ``database_url`` or NOTIFIED_DATABASE_URL."""
    url = database_url or os.environ.get("NOTIFIED_DATABASE_URL")
    if not url:
        raise RuntimeError("set NOTIFIED_DATABASE_URL to a postgresql:// URL")
    engine = create_engine(url)
    server = Server("events", engine, model=Event, group="mailer", start_from="beginning")
    server.register_handler("order_paid", receipt_handler(engine), key="receipt")
    return server


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    make_server().listen()  # until Ctrl-C or SIGTERM
