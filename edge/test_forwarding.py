"""The forwarding loop with a recording output (our own Output protocol, no external
service): order, deletion on confirmation, retry, and live data beside a backlog."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from edge.buffer import BufferedReading, StoreAndForwardBuffer
from edge.config import ForwardingConfig
from edge.forwarding import Forwarder
from edge.metrics import EdgeMetrics
from edge.outputs.base import SendResult
from shared.message import Reading


class RecordingOutput:
    name = "recording"

    def __init__(self, fail_first: int = 0) -> None:
        self.batches: list[list[int]] = []
        self.backlogs: list[int] = []
        self.fail_first = fail_first

    def send(
        self, batch: Sequence[BufferedReading], backlog: int = 0, status: bytes | None = None
    ) -> SendResult:
        self.backlogs.append(backlog)
        if self.fail_first > 0:
            self.fail_first -= 1
            return SendResult(error="destination down")
        self.batches.append([b.seq for b in batch])
        return SendResult(confirmed=[b.seq for b in batch])

    def send_status(self, status: bytes) -> str | None:
        return None

    def close(self) -> None:
        pass


def _fill(buffer: StoreAndForwardBuffer, n: int) -> list[int]:
    now = datetime.now(UTC)
    return buffer.append_many([Reading("A", "e", 0, now, {"rpm": float(i)}) for i in range(n)])


def _run_until_empty(forwarder: Forwarder, buffer: StoreAndForwardBuffer) -> None:
    forwarder.start()
    deadline = time.monotonic() + 10
    while buffer.stats().depth and time.monotonic() < deadline:
        time.sleep(0.01)
    forwarder.stop(0)


def test_in_order_and_deleted_after_confirmation_with_retries(tmp_path: Path) -> None:
    buffer = StoreAndForwardBuffer(tmp_path / "b.db")
    seqs = _fill(buffer, 25)
    output = RecordingOutput(fail_first=2)
    forwarder = Forwarder(buffer, output, 10, ForwardingConfig(retry_initial_s=0.01), EdgeMetrics())
    _run_until_empty(forwarder, buffer)
    sent = [s for batch in output.batches for s in batch]
    assert sent == seqs
    assert buffer.stats().depth == 0
    # Each attempt told the destination how much was still buffered: 25, 25 (two failures),
    # 25, then 15 and 5 as confirmed batches were deleted.
    assert output.backlogs == [25, 25, 25, 15, 5]


def test_live_readings_go_out_beside_the_backlog(tmp_path: Path) -> None:
    buffer = StoreAndForwardBuffer(tmp_path / "b.db")
    backlog = _fill(buffer, 100)  # an outage's worth
    output = RecordingOutput()
    forwarder = Forwarder(buffer, output, 10, ForwardingConfig(), EdgeMetrics())
    first = forwarder._next_batch()  # the backlog is detected: live lane opens
    assert [b.seq for b in first] == backlog[:10]
    live = _fill(buffer, 5)  # live data arrives while the backlog waits
    second = [b.seq for b in forwarder._next_batch()]
    assert second[-5:] == live and second[:5] == backlog[:5]
    _run_until_empty(forwarder, buffer)
    sent = [s for batch in output.batches for s in batch]
    assert sorted(sent) == sorted(backlog + live)
    # Each lane stays in order, and the live readings went out long before the backlog's end.
    assert [s for s in sent if s in set(live)] == live
    assert sent.index(live[-1]) < sent.index(backlog[-1])


def test_forwarder_survives_a_failing_buffer_and_says_so(tmp_path: Path) -> None:
    from tests.support.processes import wait_until

    buffer = StoreAndForwardBuffer(tmp_path / "b.db")
    _fill(buffer, 5)
    output = RecordingOutput()
    settings = ForwardingConfig(retry_initial_s=0.01, retry_max_s=0.05)
    forwarder = Forwarder(buffer, output, 10, settings, EdgeMetrics())
    buffer.close()  # every buffer call fails from now on, as on a dying disk
    forwarder.start()
    try:
        wait_until(lambda: forwarder.buffer_error is not None, 10, "the buffer error reported")
        wait_until(lambda: forwarder.last_round_at is not None, 10, "rounds completed")
        assert forwarder.alive and forwarder.died is None
        assert forwarder.buffer_failing_since is not None
        assert forwarder.stuck_for() == 0.0
    finally:
        forwarder.stop(0)
    assert output.batches == []
