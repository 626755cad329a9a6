"""The edge's HTTP endpoint: /metrics for Prometheus, /healthz for systemd checks and
``rig-edge status``.

``/healthz`` answers 200 with ``"status": "ok"`` or ``"degraded"`` (the pipeline works;
something it depends on does not: the destination, a device, a model, or an alarm), and 503
with ``"status": "unhealthy"`` when the edge itself fails (the writer cannot commit, the
forwarder thread is dead or hung). ``reasons`` says why in either case."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Callable[[], dict[str, Any]],
    ) -> None:

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body = generate_latest(registry)
                    self._reply(200, CONTENT_TYPE_LATEST, body)
                elif self.path in ("/healthz", "/health"):
                    try:
                        doc = health()
                    except Exception as exc:  # a health check that fails is no health
                        doc = {
                            "status": "unhealthy",
                            "reasons": [f"health check failed: {type(exc).__name__}: {exc}"],
                        }
                    # "degraded" (a destination or device down, an alarm) is still a working
                    # pipeline: 200. Only "unhealthy" answers 503.
                    code = 503 if doc.get("status") == "unhealthy" else 200
                    self._reply(code, "application/json", json.dumps(doc).encode())
                else:
                    self._reply(404, "text/plain", b"not found\n")

            def _reply(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes every few seconds would flood the journal

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
