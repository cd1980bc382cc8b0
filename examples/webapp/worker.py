"""The worker: a notified-sa Server that welcomes each user who signed up in app.py.

    NOTIFIED_DATABASE_URL=postgresql://... python worker.py                 # in this directory
    NOTIFIED_DATABASE_URL=postgresql://... notified-sa serve worker:make_server

Run as many workers as you like, on any machines: each event is handled once (at-least-once if a worker dies
mid-handler, which is why the handler is idempotent).
"""

import logging
import os
from collections.abc import Callable
from typing import Any

from models import Event, User
from sqlalchemy import Engine, create_engine, func
from sqlalchemy.orm import Session

from notified_sa import HandlerResult, HandlerStatus, Server


def welcome_handler(engine: Engine) -> Callable[[Any], HandlerResult]:
    """The handler for ``user_signed_up``: "send" the welcome email once and record it on the user."""

    def send_welcome(event: Event) -> HandlerResult:
        user_id = event.payload["user_id"]
        with Session(engine) as session, session.begin():
            user = session.get(User, user_id, with_for_update=True)
            if user is None:  # cannot happen: the event was committed with its user
                return HandlerResult(HandlerStatus.FAILURE, {"error": f"no user {user_id}"})
            if user.welcomed_at is None:  # idempotent: a second delivery does not send a second email
                # a real application sends the email here
                user.welcomed_at = func.now()
        return HandlerResult(HandlerStatus.SUCCESS, {"user_id": user_id, "to": event.payload["email"]})

    return send_welcome


def make_server(database_url: str | None = None) -> Server:
    """The worker's Server, on ``database_url`` or NOTIFIED_DATABASE_URL (configuration: NOTIFIED_* variables)."""
    url = database_url or os.environ.get("NOTIFIED_DATABASE_URL")
    if not url:
        raise RuntimeError("set NOTIFIED_DATABASE_URL to a postgresql:// URL")
    engine = create_engine(url)
    server = Server("events", engine, model=Event)
    server.register_handler("user_signed_up", welcome_handler(engine), key="send_welcome")
    return server


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    make_server().listen()  # until Ctrl-C or SIGTERM
