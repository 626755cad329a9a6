"""A small real HTTP server speaking the OpenAI chat-completions API, for the AI assistant's
tests: the product's client talks to it over TCP exactly as it talks to Groq or a local
llama.cpp / vLLM / Ollama server.

Each test scripts the answers: ``reply(content)`` queues a completion (a dict is sent as its
JSON text), ``fail(status, retry_after=...)`` an error, ``hang(seconds)`` a request that gets
no answer in time, ``raw(...)`` any bytes. With nothing queued, ``default`` (a function of
the request body) answers, or a 500 when none is set. Every request body is kept in
``requests`` so tests can check what the client sent (JSON mode, no streaming, the prompt).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class _Step:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] | None = None
    delay_s: float = 0.0


def completion(content: str, model: str, finish_reason: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class FakeOpenAI:
    def __init__(self, model: str = "local-test-model", api_key: str | None = None) -> None:
        self.model = model
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.default: Callable[[dict[str, Any]], dict[str, Any] | str] | None = None
        self._steps: deque[_Step] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # ends hanging requests
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting ------------------------------------------------------------------------

    def reply(self, content: dict[str, Any] | str, finish_reason: str = "stop") -> None:
        text = content if isinstance(content, str) else json.dumps(content)
        body = json.dumps(completion(text, self.model, finish_reason)).encode()
        self._queue(_Step(body=body))

    def fail(self, status: int, retry_after: str | None = None, message: str = "busy") -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        body = json.dumps({"error": {"message": message, "type": "test"}}).encode()
        self._queue(_Step(status=status, body=body, headers=headers))

    def hang(self, seconds: float) -> None:
        """The next request gets its answer only after ``seconds`` (or when the server
        stops): longer than the client's timeout, it is a timeout."""
        self._queue(_Step(status=500, body=b"{}", delay_s=seconds))

    def raw(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self._queue(_Step(status=status, body=body, content_type=content_type))

    def _queue(self, step: _Step) -> None:
        with self._lock:
            self._steps.append(step)

    def _next(self, request: dict[str, Any]) -> _Step:
        with self._lock:
            if self._steps:
                return self._steps.popleft()
        if self.default is None:
            return _Step(status=500, body=b'{"error": {"message": "nothing scripted"}}')
        content = self.default(request)
        text = content if isinstance(content, str) else json.dumps(content)
        return _Step(body=json.dumps(completion(text, self.model)).encode())

    # -- HTTP -----------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the tests assert on fake.requests

            def _send(self, step: _Step) -> None:
                self.send_response(step.status)
                self.send_header("Content-Type", step.content_type)
                self.send_header("Content-Length", str(len(step.body)))
                for key, value in (step.headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(step.body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(_Step(status=404, body=b'{"error": {"message": "not found"}}'))
                    return
                if fake.api_key and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    self._send(_Step(status=401, body=b'{"error": {"message": "bad key"}}'))
                    return
                try:
                    request = json.loads(raw)
                except json.JSONDecodeError:
                    self._send(_Step(status=400, body=b'{"error": {"message": "not JSON"}}'))
                    return
                with fake._lock:
                    fake.requests.append(request)
                step = fake._next(request)
                if step.delay_s and fake._closing.wait(step.delay_s):
                    return
                # The client may have given up (its timeout): nothing to answer to then.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._send(step)

        return Handler
