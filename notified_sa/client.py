"""NotifyClient: send a notification on a channel, as ``notified`` 0.1.0 did, with bound parameters.

With an events table and its trigger you rarely need it: committing a session that adds an event row *is*
publishing. It is there for the seed's flow (``client.notify(str(event_id))``) and for wake-ups you send yourself.

``NotifyClient(channel, bind)``: ``bind`` is an Engine or a URL (the client sends on its own, committed at once),
or a Session or Connection (the notification joins that transaction and is delivered when it commits, or never
if it rolls back). ``notify(payload, using=session)`` picks a transaction per call.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from . import queries
from ._engines import engine_from_url
from ._identifiers import check_channel
from .errors import PayloadError

__all__ = ["MAX_PAYLOAD_BYTES", "NotifyClient"]

logger = logging.getLogger(__name__)

#: PostgreSQL refuses notification payloads of 8000 bytes or more.
MAX_PAYLOAD_BYTES = 7999


def check_payload(payload: object) -> str:
    """The payload as text, or PayloadError if PostgreSQL would refuse it."""
    if isinstance(payload, bool) or not isinstance(payload, (str, int)):
        raise PayloadError(
            f"a notification payload must be text (or an int id), got {type(payload).__name__}; "
            "store data in the events table and send its id"
        )
    text = str(payload)
    if "\x00" in text:
        raise PayloadError("a notification payload cannot contain a NUL character")
    size = len(text.encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadError(
            f"the notification payload is {size} bytes; PostgreSQL allows at most {MAX_PAYLOAD_BYTES}. "
            "Store the data in the events table and send its id instead."
        )
    return text


class NotifyClient:
    """Sends notifications on one channel (the seed's ``NotifyClient``)."""

    def __init__(self, channel: str, bind: Engine | Connection | Session | str) -> None:
        self.channel = check_channel(channel)
        self._owned_engine: Engine | None = None
        if isinstance(bind, str):
            self.connection_string: str | None = bind
            self._owned_engine = engine_from_url(bind)
            self._bind: Engine | Connection | Session = self._owned_engine
        elif isinstance(bind, (Engine, Connection, Session)):
            self.connection_string = None
            self._bind = bind
        else:
            raise TypeError(
                f"NotifyClient bind must be an Engine, Connection, Session or database URL, got {type(bind).__name__}"
            )

    def notify(self, payload: str | int = "", *, using: Connection | Session | None = None) -> None:
        """Send ``payload`` on the channel.

        With ``using`` (or a Session/Connection bind) it is sent when that transaction commits; otherwise it is
        sent at once in a transaction of its own.
        """
        text = check_payload(payload)
        params: dict[str, Any] = {"channel": self.channel, "payload": text}
        target = using if using is not None else self._bind
        logger.debug("sending a notification", extra={"channel": self.channel, "payload": text})
        if isinstance(target, Engine):
            with target.begin() as conn:
                conn.execute(queries.notify, params)
        else:
            target.execute(queries.notify, params)

    def close(self) -> None:
        """Release the Engine this client created from a URL (a no-op otherwise)."""
        if self._owned_engine is not None:
            self._owned_engine.dispose()

    def __enter__(self) -> NotifyClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
