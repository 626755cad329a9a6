"""The edge daemon never dies quietly: readings it cannot encode or validate are set aside
(and their MQTT messages acknowledged), a model that raises costs only its ML verdict, a full
disk holds readings in a bounded queue until it has room again, a dead forwarder thread is
reported and restarted, and /healthz says all of it (503 within 10 s, 200 again after).

The daemon runs in-process (its own event loop thread) with a real buffer, a real Mosquitto
and a real tmpfs; the destination is a recording output (the forwarder's own protocol)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import re
import sqlite3
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml

from edge.buffer import BufferedReading
from edge.cli import main as edge_main
from edge.config import load_edge_config
from edge.daemon import EdgeDaemon
from edge.detection import CombinedDetector
from edge.forwarding import Forwarder
from edge.outputs.base import SendResult
from shared.message import Reading
from tests.support.processes import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


class _ThreadKiller(BaseException):
    """What no forwarding round can handle (the loop catches Exception only)."""


class RecordingOutput:
    """Confirms everything and records it; can kill the forwarder thread once."""

    name = "recording"
    max_send_s = 5.0

    def __init__(self) -> None:
        self.payloads: dict[int, dict[str, Any]] = {}
        self.sends = 0
        self.kill_next = False
        self.down = False
        self._lock = threading.Lock()

    def send(
        self, batch: Sequence[BufferedReading], backlog: int = 0, status: bytes | None = None
    ) -> SendResult:
        if self.down:
            return SendResult(error="destination down")
        if self.kill_next:
            self.kill_next = False
            raise _ThreadKiller("forwarder thread killed by the test")
        with self._lock:
            self.sends += 1
            for item in batch:
                assert item.seq not in self.payloads, f"seq {item.seq} forwarded twice"
                self.payloads[item.seq] = orjson.loads(item.payload)
        return SendResult(confirmed=[item.seq for item in batch])

    def send_status(self, status: bytes) -> str | None:
        return None

    def close(self) -> None:
        pass

    def values(self, sensor: str) -> list[float]:
        with self._lock:
            docs = list(self.payloads.values())
        return [d.get("custom", {}).get(sensor, d["values"].get(sensor)) for d in docs]


class RunningEdge:
    """An EdgeDaemon on its own event loop thread."""

    def __init__(
        self,
        config_path: Path,
        output: RecordingOutput,
        detector: CombinedDetector | None = None,
    ) -> None:
        self.config_path = config_path
        self.config = load_edge_config(config_path)
        self.daemon = EdgeDaemon(self.config, detector)
        daemon = self.daemon
        daemon._output.close()
        daemon._output = output
        daemon._output_batch = 100
        daemon.forwarder = Forwarder(
            daemon.buffer, output, 100, self.config.forwarding, daemon.metrics
        )
        self.output = output
        self.url = f"http://127.0.0.1:{self.config.metrics.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self.daemon.run(self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def __enter__(self) -> RunningEdge:
        self._thread.start()
        assert self._ready.wait(30)
        wait_until(lambda: self.health() is not None, 30, "the health endpoint")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the daemon did not stop"
        assert self.error is None, self.error

    def emit(self, reading: Reading, on_commit: Callable[[], None] | None = None) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(
            functools.partial(self.daemon._accept, reading, on_commit, source="test")
        )

    def health(self) -> tuple[int, dict[str, Any]] | None:
        try:
            response = httpx.get(f"{self.url}/healthz", timeout=5)
        except httpx.HTTPError:
            return None
        return response.status_code, response.json()

    def metric(self, name: str, labels: str = "") -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        pattern = rf"^{re.escape(name)}(?:\{{[^}}]*{re.escape(labels)}[^}}]*\}})? ([0-9.e+-]+)$"
        return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))

    def wait_health(
        self, predicate: Callable[[int, dict[str, Any]], bool], what: str, timeout: float = 30
    ) -> dict[str, Any]:
        seen: list[tuple[int, dict[str, Any]]] = []

        def check() -> bool:
            answer = self.health()
            if answer is None:
                return False
            seen[:] = [answer]
            return predicate(*answer)

        try:
            wait_until(check, timeout, what, interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast /healthz: {seen[-1] if seen else None}") from None
        return seen[-1][1]


def _config(
    tmp_path: Path,
    mqtt_broker: tuple[str, int],
    prefix: str,
    buffer_path: Path | None = None,
    **buffer: Any,
) -> Path:
    host, port = mqtt_broker
    doc = {
        "edge_id": "resilience",
        "buffer": {
            "path": str(buffer_path or tmp_path / "buffer.db"),
            "min_free_bytes": 0,
            **buffer,
        },
        "metrics": {"port": free_port()},
        "inputs": {
            "mqtt": [
                {
                    "name": "plant",
                    "host": host,
                    "port": port,
                    "client_id": f"edge-{prefix}",
                    "subscriptions": [
                        {
                            "topic": f"{prefix}/+/telemetry",
                            "machine_from_topic": 1,
                            "values_path": "values",
                        },
                        {
                            "topic": f"{prefix}/plant/+/+/+",
                            "machine_from_topic": 2,
                            "sensor_from_topic": 4,
                            "value_path": "val",
                            "timestamp_path": "time",
                        },
                    ],
                }
            ]
        },
        # Replaced by the recording output; the config still needs one.
        "output": {"kind": "http", "url": "http://127.0.0.1:9/x", "api_key_env": "PATH"},
        "forwarding": {"retry_initial_s": 0.05, "retry_max_s": 0.5},
    }
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _reading(machine: str = "A", rpm: float = 1500.0, **extra: Any) -> Reading:
    return Reading(machine, "resilience", 0, datetime.now(UTC), {"rpm": rpm}, **extra)


def _rejected(buffer: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{buffer}?mode=ro", uri=True)
    try:
        return [reason for (reason,) in conn.execute("SELECT reason FROM rejected")]
    finally:
        conn.close()


@contextlib.contextmanager
def _publisher(mqtt_broker: tuple[str, int]) -> Iterator[mqtt.Client]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4()}")
    client.connect(*mqtt_broker)
    client.loop_start()
    try:
        yield client
    finally:
        client.loop_stop()
        client.disconnect()


def test_writer_sets_aside_what_it_cannot_store_and_keeps_committing(
    tmp_path: Path, mqtt_broker: tuple[str, int]
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    cfg = _config(tmp_path, mqtt_broker, prefix)
    output = RecordingOutput()
    with RunningEdge(cfg, output) as edge, _publisher(mqtt_broker) as publisher:
        edge.wait_health(lambda code, doc: doc["status"] == "ok", "the MQTT source connected")
        connector = edge.daemon.inputs[0]
        # Built in process (a source's bug): a time whose UTC is before year 1 cannot even
        # be encoded, and 300 custom sensors are more than the cloud takes.
        year_one = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
        edge.emit(Reading("A", "resilience", 0, year_one, {"rpm": 1.0}))
        edge.emit(_reading(custom={f"c{i}": 1.0 for i in range(300)}))
        # Not even the thresholds can score a value that is not a number.
        not_a_number: Any = "fast"
        edge.emit(Reading("A", "resilience", 0, datetime.now(UTC), {"rpm": not_a_number}))
        # From a plant device: the clock of year 1 is replaced by the receive time; the
        # 60,000 keys are set aside and the message acknowledged all the same.
        publisher.publish(
            f"{prefix}/plant/A/x/rpm",
            orjson.dumps({"val": 1234.0, "time": "0001-01-01T00:00:00+01:00"}),
            qos=1,
        ).wait_for_publish(10)
        huge = {"rpm": 1.0, **{f"k{i}": float(i) for i in range(60_000)}}
        publisher.publish(
            f"{prefix}/B/telemetry", orjson.dumps({"values": huge}), qos=1
        ).wait_for_publish(10)
        for i in range(5):
            edge.emit(_reading(rpm=2000.0 + i))
        wait_until(
            lambda: len(output.payloads) == 6 and edge.daemon.set_aside_total == 4,
            30,
            "good readings forwarded and bad ones set aside",
        )
        wait_until(lambda: connector._unacked == 0, 30, "every MQTT message acknowledged")
        assert sorted(v for v in output.values("rpm")) == [1234.0, 2000, 2001, 2002, 2003, 2004]
        plant = next(d for d in output.payloads.values() if d["values"]["rpm"] == 1234.0)
        received = datetime.fromisoformat(plant["ts"].replace("Z", "+00:00"))
        assert abs(received - datetime.now(UTC)) < timedelta(minutes=5)
        assert edge.metric("rig_edge_device_clock_replaced_total", 'source="plant"') == 1
        assert edge.metric("rig_edge_readings_set_aside_total", 'stage="validation"') == 3
        assert edge.metric("rig_edge_readings_set_aside_total", 'stage="detection"') == 1
        doc = edge.wait_health(lambda code, doc: code == 200, "health")
        assert doc["status"] == "ok", doc
        assert doc["writer"]["set_aside_total"] == 4
        assert doc["inputs"]["plant"]["clock_replaced_total"] == 1
        reasons = _rejected(tmp_path / "buffer.db")
    assert len(reasons) == 4, reasons
    assert sum("detection failed: TypeError" in r for r in reasons) == 1, reasons
    assert sum("more than 256 custom sensors" in r for r in reasons) == 1, reasons
    assert sum("a reading is at most 131072" in r for r in reasons) == 1, reasons
    assert sum("cannot be encoded" in r for r in reasons) == 1, reasons


class _Model:
    """A machine model behind the detector's own protocol: raising like ONNX Runtime does,
    answering NaN, killing its caller once, or working."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def score_batch(self, readings: list[Reading]) -> list[dict[str, Any]]:
        if self.mode == "kill":
            self.mode = "ok"
            raise _ThreadKiller("writer killed by the test")
        if self.mode == "raise":
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : shape mismatch")
        score = float("nan") if self.mode == "nan" else 0.25
        return [{"method": "hybrid", "is_anomaly": False, "score": score} for _ in readings]


def test_a_model_that_fails_falls_back_to_thresholds(
    tmp_path: Path, mqtt_broker: tuple[str, int]
) -> None:
    detector = CombinedDetector()
    detector.install("A", _Model("raise"), "v1")
    output = RecordingOutput()
    cfg = _config(tmp_path, mqtt_broker, f"t{uuid.uuid4().hex[:8]}")
    with RunningEdge(cfg, output, detector) as edge:
        for i in range(3):
            edge.emit(_reading(rpm=1000.0 + i))
        wait_until(lambda: len(output.payloads) == 3, 30, "readings scored by thresholds")
        assert {d["detection"]["method"] for d in output.payloads.values()} == {"thresholds"}
        doc = edge.wait_health(
            lambda code, doc: code == 200 and "A" in doc["detection"]["failing"],
            "the failing model reported",
        )
        assert doc["status"] == "degraded"
        assert any("model of A failing" in r for r in doc["reasons"]), doc["reasons"]
        assert edge.metric("rig_edge_model_errors_total", 'machine="A"') >= 1
        # A model answering NaN: the cloud would refuse that detection; thresholds again.
        detector.install("A", _Model("nan"), "v2")
        for i in range(3):
            edge.emit(_reading(rpm=1100.0 + i))
        wait_until(lambda: len(output.payloads) == 6, 30, "readings of the NaN model")
        assert {d["detection"]["method"] for d in output.payloads.values()} == {"thresholds"}
        assert "A" in detector.failing
        detector.install("A", _Model("ok"), "v3")
        for i in range(3):
            edge.emit(_reading(rpm=1200.0 + i))
        wait_until(lambda: len(output.payloads) == 9, 30, "readings of the working model")
        methods = [d["detection"]["method"] for d in output.payloads.values()]
        assert methods.count("hybrid") == 3
        edge.wait_health(lambda code, doc: doc["status"] == "ok", "health ok again")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a disk the test can fill and free again."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Write a file until the tmpfs is full (unbuffered: nothing left to flush at close)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (65536, 4096, 512):
            chunk = b"\0" * size
            try:
                while True:
                    out.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def test_full_disk_holds_readings_in_a_bounded_queue_until_it_has_room(
    tmp_path: Path, tiny_disk: Path, mqtt_broker: tuple[str, int]
) -> None:
    cfg = _config(
        tmp_path,
        mqtt_broker,
        f"t{uuid.uuid4().hex[:8]}",
        buffer_path=tiny_disk / "buffer.db",
        max_pending_readings=100,
    )
    output = RecordingOutput()
    emitted = 0
    with RunningEdge(cfg, output) as edge:
        edge.wait_health(lambda code, doc: doc["status"] == "ok", "a healthy start")
        for _ in range(20):
            edge.emit(_reading(rpm=float(emitted)))
            emitted += 1
        wait_until(lambda: len(output.payloads) == 20, 30, "readings forwarded")
        # The destination is down too, so the buffer has to grow (no freed rows to reuse).
        output.down = True
        filler = _fill(tiny_disk)

        def unhealthy() -> bool:
            nonlocal emitted
            edge.emit(_reading(rpm=float(emitted)))
            emitted += 1
            answer = edge.health()
            return answer is not None and answer[0] == 503

        # The acceptance bound: unhealthy within 10 s of the writer failing.
        wait_until(unhealthy, 10, "/healthz 503 on a full disk", interval=0.1)
        answer = edge.health()
        assert answer is not None
        doc = answer[1]
        assert doc["status"] == "unhealthy"
        assert any(r.startswith("writer") for r in doc["reasons"]), doc["reasons"]
        assert doc["writer"]["consecutive_failures"] >= 1 and doc["writer"]["last_error"]
        # A full disk is no reason for systemd to restart the daemon: the watchdog pings on.
        assert edge.daemon.pipeline_alive()
        # The queue is bounded: beyond 100 readings, polled readings are dropped and counted.
        for _ in range(300):
            edge.emit(_reading(rpm=float(emitted)))
            emitted += 1
        wait_until(
            lambda: edge.daemon.dropped_total >= 200, 30, "readings beyond the queue dropped"
        )
        assert edge.daemon._queued() <= 100
        assert edge.metric("rig_edge_writer_dropped_total", 'source="test"') >= 200
        filler.unlink()
        output.down = False
        doc = edge.wait_health(
            lambda code, doc: code == 200 and doc["writer"]["queued"] == 0,
            "healthy again once the disk has room",
        )
        assert doc["writer"]["consecutive_failures"] == 0
        dropped = edge.daemon.dropped_total
        wait_until(
            lambda: len(output.payloads) == emitted - dropped,
            30,
            "every queued reading committed and forwarded",
        )
    # Nothing committed twice, nothing queued lost: the forwarded values are exactly the
    # emitted ones minus the dropped ones.
    values = output.values("rpm")
    assert len(values) == len(set(values)) == emitted - dropped


def test_healthz_reports_a_dead_forwarder_and_recovers_when_it_is_restarted(
    tmp_path: Path, mqtt_broker: tuple[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, mqtt_broker, f"t{uuid.uuid4().hex[:8]}")
    output = RecordingOutput()
    with RunningEdge(cfg, output) as edge:
        edge.wait_health(lambda code, doc: doc["status"] == "ok", "a healthy start")
        output.kill_next = True
        edge.emit(_reading())
        doc = edge.wait_health(lambda code, doc: code == 503, "/healthz 503", timeout=10)
        assert any("forwarder thread died" in r for r in doc["reasons"]), doc["reasons"]
        assert doc["forwarder"]["alive"] is False
        assert not edge.daemon.pipeline_alive()  # the watchdog stops pinging
        # `rig-edge status` shows the same document and fails.
        assert edge_main(["status", "-c", str(cfg)]) == 1
        assert '"unhealthy"' in capsys.readouterr().out
        # The daemon restarts the forwarder; the reading goes out and health returns.
        doc = edge.wait_health(lambda code, doc: code == 200, "/healthz 200 after the restart")
        assert doc["forwarder"]["restarts"] == 1
        wait_until(lambda: len(output.payloads) == 1, 30, "the reading forwarded")
        assert edge.daemon.pipeline_alive()
        assert edge_main(["status", "-c", str(cfg)]) == 0
        assert edge.metric("rig_edge_component_restarts_total", 'component="forwarder"') == 1


def test_mqtt_messages_refused_by_a_full_queue_come_back_from_the_broker(
    tmp_path: Path, tiny_disk: Path, mqtt_broker: tuple[str, int]
) -> None:
    """While the disk is full and the queue too, MQTT messages are left unacknowledged;
    once the disk has room the edge restarts its session and the broker delivers them
    again: every message stored exactly once."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    cfg = _config(
        tmp_path,
        mqtt_broker,
        prefix,
        buffer_path=tiny_disk / "buffer.db",
        max_pending_readings=100,
    )
    output = RecordingOutput()
    with RunningEdge(cfg, output) as edge, _publisher(mqtt_broker) as publisher:
        edge.wait_health(lambda code, doc: doc["status"] == "ok", "a healthy start")
        output.down = True
        filler = _fill(tiny_disk)
        sent = 0

        def publish(count: int) -> None:
            nonlocal sent
            for _ in range(count):
                payload = orjson.dumps({"values": {"rpm": 1500.0, "msg_id": sent}})
                publisher.publish(f"{prefix}/A/telemetry", payload, qos=1).wait_for_publish(10)
                sent += 1

        publish(300)
        wait_until(
            lambda: edge.metric("rig_edge_mqtt_refused_total", 'source="plant"') >= 150,
            30,
            "messages refused by the full queue",
        )
        assert edge.daemon._queued() <= 100
        filler.unlink()
        output.down = False
        publish(50)
        wait_until(
            lambda: len({v for v in output.values("msg_id")}) == sent,
            60,
            "every message stored once the broker delivered the refused ones again",
        )
        edge.wait_health(lambda code, doc: doc["status"] == "ok", "healthy again")
    ids = output.values("msg_id")
    assert sorted(ids) == list(range(sent))  # each exactly once


def test_healthz_reports_a_dead_writer_and_recovers_when_it_is_restarted(
    tmp_path: Path, mqtt_broker: tuple[str, int]
) -> None:
    detector = CombinedDetector()
    detector.install("A", _Model("kill"), "v1")
    output = RecordingOutput()
    cfg = _config(tmp_path, mqtt_broker, f"t{uuid.uuid4().hex[:8]}")
    with RunningEdge(cfg, output, detector) as edge:
        edge.wait_health(lambda code, doc: doc["status"] == "ok", "a healthy start")
        edge.emit(_reading(rpm=1500.0))
        doc = edge.wait_health(lambda code, doc: code == 503, "/healthz 503", timeout=10)
        assert any("writer is not running" in r for r in doc["reasons"]), doc["reasons"]
        assert doc["writer"]["alive"] is False
        assert not edge.daemon.pipeline_alive()
        doc = edge.wait_health(lambda code, doc: code == 200, "/healthz 200 after the restart")
        assert doc["writer"]["restarts"] == 1
        # The reading the writer held when it died was not lost with it.
        wait_until(lambda: edge.output.values("rpm") == [1500.0], 30, "the reading forwarded")
        assert edge.daemon.pipeline_alive()


def test_a_corrupt_buffer_file_raises_an_alarm_and_the_edge_collects_on(
    tmp_path: Path, mqtt_broker: tuple[str, int]
) -> None:
    cfg = _config(tmp_path, mqtt_broker, f"t{uuid.uuid4().hex[:8]}")
    (tmp_path / "buffer.db").write_bytes(b"not a database, " * 512)
    output = RecordingOutput()
    with RunningEdge(cfg, output) as edge:
        edge.emit(_reading(rpm=1234.0))
        wait_until(lambda: output.values("rpm") == [1234.0], 30, "a reading forwarded")
        doc = edge.wait_health(lambda code, doc: code == 200, "health")
        assert doc["status"] == "degraded"
        assert len(doc["alarms"]) == 1 and "corrupt" in doc["alarms"][0], doc["alarms"]
        assert doc["buffer"]["recovered_from"]
        assert Path(doc["buffer"]["recovered_from"]).exists()
        assert edge.metric("rig_edge_buffer_recovered") == 1
