"""Real notification receivers for the alerting tests and bench: an SMTP server (aiosmtpd)
and an HTTP webhook receiver (the standard library's threaded server), each on a free local
port, recording what arrives and when."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.processes import free_port


@dataclass
class Received:
    at: float
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    path: str = ""


class _MailHandler:
    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        with self.sink.lock:
            self.sink.messages.append(
                Received(
                    time.monotonic(), message_from_bytes(content), path=envelope.mail_from or ""
                )
            )
        return "250 Message accepted for delivery"


class MailSink:
    """aiosmtpd on 127.0.0.1 (a real SMTP conversation: EHLO, MAIL, RCPT, DATA)."""

    def __init__(self, port: int = 0, **smtp: Any) -> None:
        """``smtp``: aiosmtpd's server options (``tls_context``, ``require_starttls``,
        ``authenticator``, ...)."""
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        # aiosmtpd checks its server by connecting to the configured port: 0 will not do.
        self._controller = Controller(
            _MailHandler(self), hostname="127.0.0.1", port=port or free_port(), **smtp
        )

    def start(self) -> MailSink:
        self._controller.start()
        return self

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def stop(self) -> None:
        self._controller.stop()

    def mails(self) -> list[Message]:
        with self.lock:
            return [m.body for m in self.messages]


class WebhookSink:
    """Records every POST (path, headers, JSON body); answers ``fail_first`` requests with
    500 first (to exercise retries), then 200."""

    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self.fail_first = fail_first
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with sink.lock:
                    failing = sink.fail_first > 0
                    if failing:
                        sink.fail_first -= 1
                    else:
                        sink.requests.append(
                            Received(
                                time.monotonic(),
                                json.loads(raw or b"null"),
                                {k.lower(): v for k, v in self.headers.items()},
                                self.path,
                            )
                        )
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> WebhookSink:
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def bodies(self, path: str | None = None) -> list[Any]:
        with self.lock:
            return [r.body for r in self.requests if path is None or r.path == path]
