"""The exactly-once checker itself: it must fail on every way of breaking the promise
(the head of a stream lost, a gap, a repeat, a changed value, a sample the edge saw but
never delivered) and pass on a correct delivery, including one across a kill."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.catalog import CORE_SENSOR_NAMES
from tests.support.pipeline import (
    Incarnation,
    Served,
    Stored,
    check_delivery,
    f32,
    parse_edge_log,
)

T0 = 1_800_000_000_000  # ms
PERIOD = 400
FIRST_SEQ = 1_800_000_000_000_000


def _values(machine: str, n: int) -> tuple[float, ...]:
    base = 10.0 * (ord(machine) - 64) + n / 7
    return tuple(f32(base + i / 3) for i in range(len(CORE_SENSOR_NAMES)))


def _served(machines: tuple[str, ...] = ("A", "B"), count: int = 20) -> list[Served]:
    return [
        Served(m, n, T0 + (n - 1) * PERIOD + j, _values(m, n))
        for n in range(1, count + 1)
        for j, m in enumerate(machines)
    ]


def _deliver(samples: list[Served], first_seq: int = FIRST_SEQ) -> list[Stored]:
    """What a correct edge commits for these samples, in the order it saw them."""
    ordered = sorted(samples, key=lambda s: s.ts_ms)
    return [Stored(first_seq + i, s.machine, s.ts_ms, s.values) for i, s in enumerate(ordered)]


def _one_run(up_ms: int = T0 + 50) -> list[Incarnation]:
    return [Incarnation(T0, FIRST_SEQ, 0, {"*": up_ms})]


def _check(served: list[Served], stored: list[Stored], runs: list[Incarnation], **kw):
    next_seq = kw.pop("next_seq", max((r.seq for r in stored), default=FIRST_SEQ - 1) + 1)
    return check_delivery(served, stored, runs, next_seq=next_seq, **kw)


def test_a_correct_delivery_passes() -> None:
    served = _served()
    result = _check(served, _deliver(served), _one_run())
    assert result.stored == 40
    assert result.per_machine == {"A": 20, "B": 20}
    assert result.runs == {"A": [(1, 20)], "B": [(1, 20)]}


def test_losing_the_first_committed_readings_fails() -> None:
    served = _served()
    stored = _deliver(served)[3:]  # the head of the stream never reached PostgreSQL
    with pytest.raises(AssertionError, match="the first 3 the edge ever committed"):
        _check(served, stored, _one_run())


def test_losing_the_first_sample_before_commit_fails() -> None:
    """The edge committed from its second poll on (sequence numbers have no gap): the sample
    on show when the source first delivered is still missing."""
    served = _served()
    later = [s for s in served if not (s.machine == "A" and s.sample == 1)]
    with pytest.raises(AssertionError, match=r"machine A: 1 samples the edge could see .*: 1;"):
        _check(served, _deliver(later), _one_run())


def test_a_sample_the_edge_started_after_is_not_required() -> None:
    served = _served()
    # The source first delivered after sample 3 was served: samples 1 and 2 were gone from
    # the device before the edge looked, sample 3 was on show and must be there.
    up = T0 + 2 * PERIOD + 100
    seen = [s for s in served if s.sample >= 3]
    result = _check(served, _deliver(seen), _one_run(up))
    assert result.unseen == {"A": [1, 2], "B": [1, 2]}
    without_3 = [s for s in seen if not (s.machine == "B" and s.sample == 3)]
    with pytest.raises(AssertionError, match="machine B: 1 samples"):
        _check(served, _deliver(without_3), _one_run(up))


def test_a_repeat_under_a_new_sequence_number_fails() -> None:
    served = _served()
    stored = _deliver([*served, served[10]])
    with pytest.raises(AssertionError, match=r"sample \w#\d+ stored twice"):
        _check(served, stored, _one_run())


def test_the_same_sequence_number_twice_fails() -> None:
    served = _served()
    stored = _deliver(served)
    with pytest.raises(AssertionError, match="stored more than once"):
        _check(served, [*stored, replace(stored[5], where="other-db")], _one_run())


def test_a_changed_value_fails() -> None:
    served = _served()
    stored = _deliver(served)
    values = list(stored[7].values)
    values[4] = values[4] + 0.5
    stored[7] = replace(stored[7], values=tuple(values))
    with pytest.raises(AssertionError, match=f"values differ.*{CORE_SENSOR_NAMES[4]}"):
        _check(served, stored, _one_run())


def test_a_reading_never_served_fails() -> None:
    served = _served()
    stored = _deliver(served)
    stored[-1] = replace(stored[-1], ts_ms=stored[-1].ts_ms + 1)
    with pytest.raises(AssertionError, match="never served"):
        _check(served, stored, _one_run())


def test_a_gap_in_the_middle_fails_twice_over() -> None:
    served = _served()
    stored = _deliver(served)
    del stored[17]
    with pytest.raises(AssertionError) as failure:
        _check(served, stored, _one_run())
    assert "1 committed sequence numbers missing" in str(failure.value)
    assert "samples the edge could see are not stored" in str(failure.value)


def test_losing_the_tail_of_what_was_committed_fails() -> None:
    served = _served()
    stored = _deliver(served)
    with pytest.raises(AssertionError, match="2 committed sequence numbers missing"):
        _check(served, stored[:-2], _one_run(), next_seq=stored[-1].seq + 1)


def _killed_at(ms: int, restart_up: int, restart_seq: int) -> list[Incarnation]:
    return [
        Incarnation(T0, FIRST_SEQ, 0, {"*": T0 + 50}, ended_ms=ms, end="SIGKILL"),
        Incarnation(restart_up - 100, restart_seq, 0, {"*": restart_up}),
    ]


def test_samples_served_while_the_edge_was_dead_are_excused_not_others() -> None:
    served = _served(count=30)
    death = T0 + 10 * PERIOD + 200  # sample 11 on show
    back = T0 + 16 * PERIOD + 100  # sample 17 on show
    # Acquired but not committed when killed: the samples within the kill window (1 s).
    seen = [s for s in served if s.sample <= 9 or s.sample >= 17]
    stored = _deliver(seen)
    runs = _killed_at(death, back, FIRST_SEQ + 18)
    result = _check(served, stored, runs)
    assert result.unseen["A"] == list(range(10, 17))
    # Sample 7 was served 1.8 s before the kill: the edge had it, so losing it fails.
    lost = [s for s in seen if s.sample != 7]
    with pytest.raises(AssertionError, match=r"machine A: 1 samples .*: 7;"):
        _check(served, _deliver(lost), _killed_at(death, back, FIRST_SEQ + 14))
    # And the sample on show when the restarted edge came up must be there.
    late = [s for s in seen if s.sample != 17]
    with pytest.raises(AssertionError, match=r"machine B: 1 samples .*: 17;"):
        _check(served, _deliver(late), _killed_at(death, back, FIRST_SEQ + 16))


def test_queued_delivery_excuses_nothing_after_the_first_subscription() -> None:
    served = _served(count=30)
    death = T0 + 10 * PERIOD + 200
    back = T0 + 16 * PERIOD + 100
    everything = _deliver(served)
    _check(served, everything, _killed_at(death, back, FIRST_SEQ + 20), delivery="queued")
    seen = [s for s in served if s.sample <= 9 or s.sample >= 17]
    with pytest.raises(AssertionError, match="machine A: 7 samples"):
        _check(served, _deliver(seen), _killed_at(death, back, FIRST_SEQ + 16), delivery="queued")


def test_rejected_readings_are_accounted_for_and_must_not_be_stored() -> None:
    served = _served()
    stored = _deliver(served)
    rejected_seq = FIRST_SEQ - 1  # set aside before the stream: not in the sequence
    runs = [Incarnation(T0, FIRST_SEQ - 1, 1, {"*": T0 + 50})]
    _check(served, stored, runs, rejected={rejected_seq: "HTTP 422"})
    with pytest.raises(AssertionError, match="never committed or had rejected"):
        _check(served, stored, _one_run(), rejected={stored[3].seq: "HTTP 422"})


def test_a_reading_set_aside_before_numbering_has_its_fate() -> None:
    served = _served()
    odd = served[6]
    kept = [s for s in served if s is not odd]
    result = _check(
        served, _deliver(kept), _one_run(), set_aside=[(odd.machine, odd.ts_ms, "cannot score")]
    )
    assert result.unseen == {"A": [], "B": []}
    with pytest.raises(AssertionError, match="samples the edge could see are not stored"):
        _check(served, _deliver(kept), _one_run())


def test_drops_by_the_disk_cap_fail_unless_expected() -> None:
    served = _served()
    with pytest.raises(AssertionError, match="dropped 5 readings"):
        _check(served, _deliver(served), _one_run(), dropped_total=5)


def test_the_simulators_last_second_is_not_required() -> None:
    served = _served()
    # Samples 19 and 20 of A were served within the last second before the simulator
    # stopped: the edge may not have polled them.
    kept = [s for s in served if not (s.machine == "A" and s.sample >= 19)]
    _check(served, _deliver(kept), _one_run())
    kept = [s for s in served if not (s.machine == "A" and s.sample >= 17)]
    with pytest.raises(AssertionError, match=r"machine A: 1 samples .*: 17;"):
        _check(served, _deliver(kept), _one_run())


def _line(ms: int, event: str, **fields: object) -> str:
    stamp = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return json.dumps({"ts": stamp, "level": "info", "event": event, **fields})


def test_the_edge_log_gives_each_run(tmp_path: Path) -> None:
    log = tmp_path / "rig-edge.log"
    log.write_text(
        "\n".join(
            [
                _line(T0, "edge starting", next_seq=FIRST_SEQ, buffered=0),
                _line(T0 + 5, "modbus connected", source="sim"),
                _line(T0 + 7, "modbus device healthy", source="sim", machine="A"),
                _line(T0 + 9, "modbus device healthy", source="sim", machine="B"),
                _line(T0 + 900, "failpoint edge.buffer.after_commit reached: killing the process"),
                "Traceback (most recent call last): not JSON, skipped",
                _line(T0 + 2000, "edge starting", next_seq=FIRST_SEQ + 9, buffered=2),
                _line(T0 + 2010, "modbus device healthy", source="sim", machine="A"),
                _line(T0 + 3000, "SIGKILL sent by the test harness", pid=1),
                _line(T0 + 4000, "edge starting", next_seq=FIRST_SEQ + 20, buffered=0),
                _line(T0 + 4010, "mqtt connected", source="plant"),
                _line(T0 + 5000, "edge stopping"),
                _line(T0 + 5100, "edge stopped", left_buffered=0),
            ]
        )
        + "\n"
    )
    runs = parse_edge_log(log)
    assert [(r.first_seq, r.buffered_at_start, r.end, r.ended_ms) for r in runs] == [
        (FIRST_SEQ, 0, "failpoint edge.buffer.after_commit", T0 + 900),
        (FIRST_SEQ + 9, 2, "SIGKILL", T0 + 3000),
        (FIRST_SEQ + 20, 0, "stopped", T0 + 5000),
    ]
    assert runs[0].up_ms == {"A": T0 + 7, "B": T0 + 9}
    assert runs[1].up("B") is None
    assert runs[2].up("B") == T0 + 4010


def test_a_run_that_vanished_without_a_trace_is_an_error(tmp_path: Path) -> None:
    log = tmp_path / "rig-edge.log"
    log.write_text(
        _line(T0, "edge starting", next_seq=FIRST_SEQ, buffered=0)
        + "\n"
        + _line(T0 + 100, "edge starting", next_seq=FIRST_SEQ + 1, buffered=0)
        + "\n"
    )
    with pytest.raises(AssertionError, match="crashed"):
        parse_edge_log(log)


@pytest.mark.integration
def test_against_postgresql_a_record_and_a_buffer_file(tmp_path: Path, database_url: str) -> None:
    """The whole checker on real files: the simulator's recorder, the edge's buffer and
    PostgreSQL written by the cloud's own storage code; then the head goes missing."""
    import psycopg

    from cloud.storage import store_readings
    from edge.buffer import StoreAndForwardBuffer
    from shared.message import Reading
    from simulator.engine import Sample
    from simulator.record import SampleRecorder
    from tests.support.pipeline import EdgeRun, verify_exactly_once

    record = tmp_path / "served.db"
    recorder = SampleRecorder(record)
    served = _served(count=10)
    recorder.publish([_as_sample(s, Sample) for s in sorted(served, key=lambda s: s.ts_ms)])
    recorder.close()

    buffer = StoreAndForwardBuffer(tmp_path / "buffer.db", clock_us=lambda: FIRST_SEQ)
    readings = [
        Reading(
            s.machine,
            "edge-x",
            0,
            datetime.fromtimestamp(s.ts_ms / 1000, UTC),
            dict(zip(CORE_SENSOR_NAMES, s.values, strict=True)),
        )
        for s in sorted(served, key=lambda s: s.ts_ms)
    ]
    seqs = buffer.append_many(readings)
    buffer.ack(seqs)  # forwarded: the buffer is empty, next_seq stays
    buffer.close()
    with psycopg.connect(database_url) as conn, conn.transaction():
        store_readings(conn, readings, None)

    config = tmp_path / "edge-x.yaml"
    config.write_text(json.dumps({"edge_id": "edge-x", "buffer": {"path": str(buffer.path)}}))
    log = tmp_path / "rig-edge.log"
    log.write_text(
        _line(T0 - 500, "edge starting", next_seq=FIRST_SEQ, buffered=0)
        + "\n"
        + _line(T0 + 10, "opcua subscribed", source="plc")
        + "\n"
    )
    edge = EdgeRun(config, log)
    result = verify_exactly_once(database_url, record, "edge-x", edge=edge)
    assert result.stored == 20 and result.unseen == {"A": [], "B": []}

    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM sensor_readings WHERE seq = %s", (FIRST_SEQ,))
    with pytest.raises(AssertionError, match="the first 1 the edge ever committed"):
        verify_exactly_once(database_url, record, "edge-x", edge=edge)


def _as_sample(s: Served, sample_type: type) -> object:
    return sample_type(
        machine_id=s.machine,
        unit_id=1,
        counter=s.sample,
        ts_ms=s.ts_ms,
        state=2,
        values=list(s.values),
        faults=[],
        rul_s=None,
    )
