"""The billing service: an invoice for every paid order, in the subscriber group ``billing``.

    NOTIFIED_DATABASE_URL=postgresql://... notified-sa serve billing:make_server     # in this directory

Run as many billing servers as you like: they share the group's events, each event handled by one of them.
"""

import logging
import os
from collections.abc import Callable
from typing import Any

from models import Event, Invoice
from sqlalchemy import Engine, create_engine
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from notified_sa import HandlerResult, HandlerStatus, Server


def invoice_handler(engine: Engine) -> Callable[[Any], HandlerResult]:
    """The handler for ``order_paid``: write the order's invoice once (a second delivery changes nothing)."""

    def write_invoice(event: Event) -> HandlerResult:
        order_id = event.payload["order_id"]
        with Session(engine) as session, session.begin():
            stmt = insert(Invoice).values(order_id=order_id, amount_cents=event.payload["total"])
            session.execute(stmt.on_conflict_do_nothing(index_elements=[Invoice.order_id]))
        return HandlerResult(HandlerStatus.SUCCESS, {"invoiced": order_id})

    return write_invoice


def make_server(database_url: str | None = None) -> Server:
    """The billing service's Server, on ``database_url`` or NOTIFIED_DATABASE_URL."""
    url = database_url or os.environ.get("NOTIFIED_DATABASE_URL")
    if not url:
        raise RuntimeError("set NOTIFIED_DATABASE_URL to a postgresql:// URL")
    engine = create_engine(url)
    # group="billing": every order_paid event reaches billing, whatever other services also subscribe.
    # start_from="beginning": the first time the group runs, it also takes the orders paid before (a group's
    # default is "now"); once the group exists it misses nothing, whether or not a billing server runs.
    server = Server("events", engine, model=Event, group="billing", start_from="beginning")
    server.register_handler("order_paid", invoice_handler(engine), key="invoice")
    return server


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    make_server().listen()  # until Ctrl-C or SIGTERM
