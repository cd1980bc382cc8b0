"""The example handlers: HTTPHandler against a real local HTTP server, ConsoleHandler, HandlerResult."""

from __future__ import annotations

import datetime
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from notified_sa.handlers import ConsoleHandler, HandlerResult, HandlerStatus, HTTPHandler, event_as_dict


class _Handler(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str, Any]] = []  # noqa: RUF012

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.received.append((self.command, self.path, body))
        if self.path == "/slow":
            threading.Event().wait(2)
        status = {"/ok": 200, "/created": 201, "/fail": 503, "/missing": 404}.get(self.path, 200)
        data = b'{"accepted": true}' if status < 300 else b"upstream is down"
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class _Quiet(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the /slow client gave up (that is the test); its broken pipe is expected


@pytest.fixture
def http_url() -> Iterator[str]:
    server = _Quiet(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


EVENT = {"id": 7, "name": "user_signed_up", "payload": {"user_id": 1}, "created_at": datetime.datetime(2026, 1, 1)}


def test_2xx_is_success_with_status_and_body(http_url: str) -> None:
    for path, status in (("/ok", 200), ("/created", 201)):
        result = HTTPHandler(http_url + path, "POST").handle(EVENT)
        assert result.status is HandlerStatus.SUCCESS
        assert result.payload == {"status": status, "body": {"accepted": True}}
    method, path, body = _Handler.received[-1]
    assert (method, path, body["id"], body["created_at"]) == ("POST", "/created", 7, "2026-01-01T00:00:00")


@pytest.mark.parametrize(("path", "status"), [("/fail", 503), ("/missing", 404)])
def test_other_statuses_are_failures_recording_status_and_body(http_url: str, path: str, status: int) -> None:
    result = HTTPHandler(http_url + path).handle(EVENT)
    assert result.status is HandlerStatus.FAILURE
    assert result.payload["status"] == status and result.payload["body"] == "upstream is down"


def test_timeout_and_connection_errors_are_failures(http_url: str) -> None:
    slow = HTTPHandler(http_url + "/slow", timeout=0.2).handle(EVENT)
    assert slow.status is HandlerStatus.FAILURE and "timed out" in slow.payload["error"].lower()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it once closed
    refused = HTTPHandler(f"http://127.0.0.1:{port}/x", timeout=2).handle(EVENT)
    assert refused.status is HandlerStatus.FAILURE and "refused" in refused.payload["error"].lower()
    with pytest.raises(ValueError, match="http:// or https://"):
        HTTPHandler("ftp://example.com")


def test_console_handler_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    result = ConsoleHandler().handle(EVENT)
    assert result == HandlerResult(HandlerStatus.SUCCESS, {"id": 7, "name": "user_signed_up"})
    assert json.loads(capsys.readouterr().out)["payload"] == {"user_id": 1}
    assert result.success and not result.failure
    assert event_as_dict(EVENT)["created_at"] == "2026-01-01T00:00:00"
