"""The fault suite's accounting against a real PostgreSQL: it must see every way a reading
can go missing or be stored twice, and must not call accounted readings lost."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from benchmarks.faults.accounting import Ledger, account
from cloud.storage import store_readings
from shared.catalog import CORE_SENSOR_NAMES
from shared.message import Reading
from simulator.engine import Sample
from simulator.record import SampleRecorder
from simulator.register_map import float32

pytestmark = pytest.mark.integration

EDGE = "edge-acct"
TOPIC = "acct-topic"
FIRST_SEQ = 1_000_000
T0_MS = int(datetime.now(UTC).timestamp() * 1000) - 60_000


def _samples(count: int) -> list[Sample]:
    rng = random.Random(4)
    return [
        Sample(
            "M1",
            1,
            n,
            T0_MS + 200 * n,
            2,
            float32([rng.uniform(1, 100) for _ in CORE_SENSOR_NAMES]),
            [],
            None,
        )
        for n in range(1, count + 1)
    ]


def _record(path: Path, samples: list[Sample]) -> Path:
    recorder = SampleRecorder(path)
    recorder.publish(samples)
    recorder.close()
    return path


def _reading(sample: Sample, seq: int, ts_ms: int | None = None) -> Reading:
    ts = datetime.fromtimestamp((ts_ms or sample.ts_ms) / 1000, UTC)
    values = dict(zip(CORE_SENSOR_NAMES, sample.values, strict=True))
    return Reading(sample.machine_id, EDGE, seq, ts, values)


def _store(database_url: str, readings: list[Reading]) -> None:
    with psycopg.connect(database_url) as conn, conn.transaction():
        store_readings(conn, readings)


def _ledger(end: int, **kwargs: Any) -> Ledger:
    ledger = Ledger(EDGE)
    ledger.started(FIRST_SEQ)
    ledger.close(end, **kwargs)
    return ledger


def _account(database_url: str, record: Path, ledger: Ledger, **kwargs: Any) -> dict:
    return account(
        database_url=database_url,
        record=record,
        ledger=ledger,
        topic=TOPIC,
        final_metrics=kwargs.pop("metrics", None),
        **kwargs,
    )


def test_everything_stored_once_is_nothing_lost(database_url: str, tmp_path: Path) -> None:
    samples = _samples(10)
    record = _record(tmp_path / "served.db", samples)
    _store(database_url, [_reading(s, FIRST_SEQ + i) for i, s in enumerate(samples)])
    result = _account(database_url, record, _ledger(FIRST_SEQ + 10))
    assert (result["lost"], result["duplicated"], result["not_polled"]) == (0, 0, 0)
    assert (result["stored"], result["committed"], result["mismatched"]) == (10, 10, 0)


def test_losing_the_head_of_the_stream_is_lost(database_url: str, tmp_path: Path) -> None:
    samples = _samples(10)
    record = _record(tmp_path / "served.db", samples)
    # The edge committed all ten; the first two never reached PostgreSQL.
    _store(database_url, [_reading(s, FIRST_SEQ + i) for i, s in enumerate(samples)][2:])
    result = _account(database_url, record, _ledger(FIRST_SEQ + 10))
    assert result["lost"] == 2
    assert result["detail"]["missing_seqs_sample"] == [FIRST_SEQ, FIRST_SEQ + 1]


def test_drop_counters_dead_letters_and_rejected_account_for_missing_readings(
    database_url: str, tmp_path: Path
) -> None:
    samples = _samples(10)
    record = _record(tmp_path / "served.db", samples)
    readings = [_reading(s, FIRST_SEQ + i) for i, s in enumerate(samples)]
    # 0-2 dropped by the cap (counted), 3 rejected by the destination, 4 dead-lettered.
    _store(database_url, readings[5:])
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO dead_letters (source, topic, kafka_partition, kafka_offset, reason, "
            "payload) VALUES ('kafka', %s, 0, 7, 'timestamp out of range', %s)",
            (TOPIC, orjson.dumps(readings[4].to_wire())),
        )
    ledger = _ledger(FIRST_SEQ + 10, dropped=3, rejected={FIRST_SEQ + 3})
    result = _account(database_url, record, ledger)
    assert result["lost"] == 0
    assert result["dropped_counted"] == 5
    assert result["not_polled"] == 0  # every unstored sample is accounted for

    # One drop fewer than missing readings: exactly one is lost.
    ledger = _ledger(FIRST_SEQ + 10, dropped=2, rejected={FIRST_SEQ + 3})
    assert _account(database_url, record, ledger)["lost"] == 1


def test_a_sample_committed_twice_is_a_duplicate(database_url: str, tmp_path: Path) -> None:
    samples = _samples(5)
    record = _record(tmp_path / "served.db", samples)
    readings = [_reading(s, FIRST_SEQ + i) for i, s in enumerate(samples)]
    # The edge read sample 5 again after a restart and committed it under a new seq.
    readings.append(_reading(samples[4], FIRST_SEQ + 5))
    _store(database_url, readings)
    result = _account(database_url, record, _ledger(FIRST_SEQ + 6))
    assert result["duplicated"] == 1
    assert result["lost"] == 0


def test_acquired_but_never_committed_nor_counted_is_lost(
    database_url: str, tmp_path: Path
) -> None:
    samples = _samples(6)
    record = _record(tmp_path / "served.db", samples)
    _store(database_url, [_reading(s, FIRST_SEQ + i) for i, s in enumerate(samples[:4])])
    metrics = {
        "rig_edge_readings_in_total": 6.0,
        "rig_edge_readings_buffered_total": 4.0,
        "rig_edge_writer_dropped_total": 1.0,
    }
    result = _account(database_url, record, _ledger(FIRST_SEQ + 4), metrics=metrics)
    assert result["lost"] == 1  # one dropped and counted, one vanished
    assert result["dropped_counted"] == 1


def test_unpolled_samples_are_not_lost_and_down_windows_explain_them(
    database_url: str, tmp_path: Path
) -> None:
    samples = _samples(10)
    record = _record(tmp_path / "served.db", samples)
    # The edge was down while samples 4-6 were served: it committed 7 readings.
    seen = samples[:3] + samples[6:]
    _store(database_url, [_reading(s, FIRST_SEQ + i) for i, s in enumerate(seen)])
    ledger = _ledger(FIRST_SEQ + 7)
    result = _account(database_url, record, ledger)
    assert (result["lost"], result["not_polled"], result["not_polled_while_up"]) == (0, 3, 3)
    ledger.down.append((samples[3].ts_ms / 1000, samples[5].ts_ms / 1000))
    result = _account(database_url, record, ledger)
    assert (result["not_polled"], result["not_polled_while_up"]) == (3, 0)


def test_rows_with_the_receive_time_match_their_sample_by_value(
    database_url: str, tmp_path: Path
) -> None:
    samples = [replace(s, clock_offset_ms=3_155_760_000_000) for s in _samples(4)]
    record = _record(tmp_path / "served.db", samples)
    # The device said 2126; the edge stored its own receive time, 150 ms after the truth.
    _store(
        database_url,
        [_reading(s, FIRST_SEQ + i, ts_ms=s.ts_ms + 150) for i, s in enumerate(samples)],
    )
    result = _account(database_url, record, _ledger(FIRST_SEQ + 4))
    assert (result["lost"], result["mismatched"], result["clock_replaced"]) == (0, 0, 4)


def test_a_row_that_is_no_served_sample_is_mismatched(database_url: str, tmp_path: Path) -> None:
    samples = _samples(3)
    record = _record(tmp_path / "served.db", samples)
    forged = replace(samples[2], values=[v + 1 for v in samples[2].values])
    readings = [_reading(samples[0], FIRST_SEQ), _reading(samples[1], FIRST_SEQ + 1)]
    _store(database_url, [*readings, _reading(forged, FIRST_SEQ + 2)])
    result = _account(database_url, record, _ledger(FIRST_SEQ + 3))
    assert result["mismatched"] == 1
