"""Handler results and two example handlers.

A handler is any callable taking one event (a dict of the row, or a detached model instance when the Server has
a ``model``) and returning a :class:`HandlerResult` or None (None counts as success). Raising counts as a failure
with the traceback stored. As in ``notified`` 0.1.0::

    from notified_sa.handlers import HandlerResult, HandlerStatus

    def my_handler(event_data):
        return HandlerResult(status=HandlerStatus.SUCCESS, payload=event_data)
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import logging
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DEFAULT_TIMEOUT",
    "ConsoleHandler",
    "HTTPHandler",
    "HandlerResult",
    "HandlerStatus",
    "event_as_dict",
]

logger = logging.getLogger(__name__)

#: The seed's default HTTP timeout, in seconds.
DEFAULT_TIMEOUT = 240
_MAX_BODY = 4096


class HandlerStatus(enum.Enum):
    """The outcome of one handler run: SUCCESS, or FAILURE (retried with backoff, then dead)."""

    SUCCESS = enum.auto()
    FAILURE = enum.auto()


@dataclasses.dataclass
class HandlerResult:
    """What a handler returns: a status and a JSON-serialisable payload, stored on the event row."""

    status: HandlerStatus
    payload: Any = None

    @property
    def success(self) -> bool:
        """True if the status is SUCCESS."""
        return self.status == HandlerStatus.SUCCESS

    @property
    def failure(self) -> bool:
        """True if the status is FAILURE."""
        return self.status == HandlerStatus.FAILURE


def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return value


def event_as_dict(event: Any) -> dict[str, Any]:
    """The event's columns as a JSON-able dict, whether it is a row dict or a mapped model instance.

    Datetimes become ISO 8601 strings, decimals and UUIDs strings, enums their values.
    """
    if isinstance(event, Mapping):
        items = dict(event)
    else:
        from sqlalchemy import inspect as sa_inspect

        mapper = sa_inspect(type(event))
        items = {attr.key: getattr(event, attr.key) for attr in mapper.column_attrs}
    return {key: _jsonable(value) for key, value in items.items()}


class ConsoleHandler:
    """Writes each event to standard output (an example; register ``ConsoleHandler().handle``)."""

    def handle(self, event: Any) -> HandlerResult:
        """Print the event as one JSON line and succeed with its id and name as the payload."""
        data = event_as_dict(event)
        logger.info("console handler got an event", extra={"event_id": data.get("id"), "event_name": data.get("name")})
        sys.stdout.write(json.dumps(data, default=str) + "\n")
        sys.stdout.flush()
        return HandlerResult(status=HandlerStatus.SUCCESS, payload={"id": data.get("id"), "name": data.get("name")})

    __call__ = handle


class HTTPHandler:
    """Sends each event as JSON to a URL (an example; register ``HTTPHandler(url, "POST").handle``).

    Any 2xx answer is a success whose payload holds the status and the body (parsed as JSON when it is JSON).
    Any other status is a failure recording the status and the body; a timeout or a connection error is a
    failure recording the error. Failures are retried by the Server.
    """

    def __init__(
        self,
        url: str,
        method: str = "POST",
        timeout: float = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"HTTPHandler url must start with http:// or https://, got {url!r}")
        self.url = url
        self.method = method.upper()
        self.timeout = timeout
        self.headers = dict(headers or {})

    @staticmethod
    def encode_payload(payload: Any) -> bytes:
        """The request body: the event as UTF-8 JSON."""
        return json.dumps(event_as_dict(payload), default=str).encode("utf-8")

    @staticmethod
    def _body(raw: bytes) -> Any:
        text = raw[:_MAX_BODY].decode("utf-8", errors="replace")
        try:
            return json.loads(text)
        except ValueError:
            return text

    def handle(self, payload: Any) -> HandlerResult:
        """Send the event; SUCCESS on 2xx, FAILURE on any other status, a timeout or a connection error."""
        request = urllib.request.Request(self.url, data=self.encode_payload(payload), method=self.method)  # noqa: S310
        request.add_header("Content-Type", "application/json")
        for name, value in self.headers.items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                status = int(response.status)
                body = self._body(response.read())
        except urllib.error.HTTPError as exc:
            status = int(exc.code)
            body = self._body(exc.read() if exc.fp is not None else b"")
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            logger.warning("HTTP handler could not reach %s: %s", self.url, reason, extra={"url": self.url})
            return HandlerResult(
                status=HandlerStatus.FAILURE,
                payload={"url": self.url, "error": f"{type(reason).__name__}: {reason}"},
            )
        if 200 <= status < 300:
            return HandlerResult(status=HandlerStatus.SUCCESS, payload={"status": status, "body": body})
        logger.warning(
            "HTTP handler got status %s from %s", status, self.url, extra={"url": self.url, "status": status}
        )
        return HandlerResult(status=HandlerStatus.FAILURE, payload={"url": self.url, "status": status, "body": body})

    __call__ = handle
