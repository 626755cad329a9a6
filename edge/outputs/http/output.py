"""HTTP(S) output: batches to the cloud's POST /api/v1/ingest.

The cloud stores (or produces to Kafka) a whole batch atomically and answers 200 only after
that, so 200 confirms every reading in the batch. A 4xx other than 408/429 means the cloud
will never take the batch; it is split until the offending reading is alone, and that one
is rejected with the server's reason instead of blocking the buffer forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import httpx

from edge.buffer import BufferedReading
from edge.outputs.base import SendResult
from edge.outputs.http.config import HttpOutputConfig
from shared.edge_status import HTTP_HEADER, STATUS_PATH

log = logging.getLogger(__name__)

_RETRYABLE = {408, 425, 429}


def http_client(config: HttpOutputConfig) -> httpx.Client:
    """The client the output sends with (TLS verification, timeout, the key): the probe of
    ``check-config --probe`` uses the same, so a probe that passes means the daemon gets in."""
    verify: bool | str = str(config.ca_file) if config.ca_file is not None else config.verify_tls
    return httpx.Client(
        timeout=config.timeout_s,
        verify=verify,
        headers={"X-API-KEY": config.api_key(), "Content-Type": "application/json"},
    )


class HttpOutput:
    name = "http"

    def __init__(self, config: HttpOutputConfig) -> None:
        self.config = config
        self._backlog = 0
        self._status: bytes | None = None
        # Isolating a refused reading takes up to 2*log2(batch) requests; they stop at this
        # deadline (the rest is retried next round), so one send is bounded whatever the
        # server does: the forwarder tells a slow destination from a hung loop by it.
        self._send_budget_s = max(60.0, 6 * config.timeout_s)
        # httpx's timeout applies per phase (connect, write, read, pool).
        self.max_send_s = self._send_budget_s + 4 * config.timeout_s
        self._deadline = 0.0
        self._client = http_client(config)

    def _post(self, batch: Sequence[BufferedReading]) -> httpx.Response:
        body = b'{"readings":[' + b",".join(item.payload for item in batch) + b"]}"
        headers = {"X-Edge-Backlog": str(self._backlog)}
        if self._status is not None:
            # ASCII JSON (shared.edge_status keeps every string ASCII): a valid header value.
            headers[HTTP_HEADER] = self._status.decode("ascii")
        return self._client.post(self.config.url, content=body, headers=headers)

    def send(
        self, batch: Sequence[BufferedReading], backlog: int = 0, status: bytes | None = None
    ) -> SendResult:
        result = SendResult()
        self._backlog = backlog
        self._status = status
        self._deadline = time.monotonic() + self._send_budget_s
        self._send_into(batch, result)
        return result

    def _send_into(self, batch: Sequence[BufferedReading], result: SendResult) -> None:
        if time.monotonic() > self._deadline:
            result.error = "send deadline reached while isolating refused readings"
            return
        try:
            response = self._post(batch)
        except httpx.HTTPError as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            return
        if response.status_code == 200:
            result.confirmed.extend(item.seq for item in batch)
            return
        reason = response.text[:500]
        if 400 <= response.status_code < 500 and response.status_code not in _RETRYABLE:
            if response.status_code in (401, 403):
                result.error = f"HTTP {response.status_code}: API key refused"
                return
            if len(batch) == 1:
                result.rejected[batch[0].seq] = f"HTTP {response.status_code}: {reason}"
                return
            middle = len(batch) // 2
            self._send_into(batch[:middle], result)
            if result.error is None:
                self._send_into(batch[middle:], result)
            return
        result.error = f"HTTP {response.status_code}: {reason}"

    def send_status(self, status: bytes) -> str | None:
        """The report alone: ``POST /api/v1/edges/status`` on the ingest URL's server."""
        url = httpx.URL(self.config.url).join(STATUS_PATH)
        try:
            response = self._client.post(url, content=status)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if response.status_code == 204:
            return None
        return f"HTTP {response.status_code}: {response.text[:300]}"

    def close(self) -> None:
        self._client.close()
