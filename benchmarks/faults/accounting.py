"""Ground truth against what PostgreSQL holds: the numbers every fault scenario reports.

Three records are compared, none of which the product can rewrite:

- the simulator's ``--record`` (every sample it served, with its TRUE time, its values and
  what its possibly wrong clock said);
- the edge's sequence numbers: each incarnation logs ``edge starting`` with ``next_seq``, and
  the buffer file (read after a clean stop) holds the last one assigned, its drop counter and
  the ``rejected`` table. A reading has a sequence number exactly when the edge committed it;
- PostgreSQL: ``sensor_readings`` and ``dead_letters``.

Definitions (per scenario; one edge id per scenario):

``committed``
    Sequence numbers the edge assigned: from the first ``next_seq`` an incarnation logged
    to the ``next_seq`` of the buffer when the scenario ends (per buffer file: a buffer moved
    aside as corrupt closes its range where its own counter stopped).
``lost``
    Committed readings that are neither stored, nor dead-lettered by the cloud, nor in the
    edge's ``rejected`` table, nor covered by the edge's drop counters (``dropped_total`` of
    drop-oldest, the rejected table's cap); plus readings the final edge process acquired
    (``rig_edge_readings_in``) but neither committed nor counted as dropped, set aside or
    still queued (nor, for MQTT, recognised as a redelivery of a committed message or left
    unacknowledged for the broker to deliver again); plus, where a scenario injects
    messages itself (poison), injected readings whose fate is none of stored / dead letter /
    4xx; plus, for a push source with a persistent session (MQTT QoS 1), every sample
    published after the edge first subscribed that no stored row or counter accounts for —
    the broker keeps those while the edge is down, so for such a source nothing is "not
    polled".
``duplicated``
    Extra rows for one ``(edge_id, seq)`` and extra rows for one served sample (the same
    sample committed twice under two sequence numbers).
``dropped_counted``
    Readings set aside with a record of it: the edge's drop-oldest and writer-queue drop
    counters, its rejected table, and the cloud's dead letters of this scenario's topic.
``not_polled``
    Served samples that no stored row, drop counter or dead letter accounts for. A Modbus
    device holds only its latest sample; a sample the edge never read (the edge was dead
    between a kill and its restart, still starting, or a poll came after the next tick) was
    never acquired, so it cannot be lost — and equally a sample acquired but not yet
    committed when ``kill -9`` struck dies with the process; this suite cannot tell those two
    apart and counts both here (that window is part of the stated guarantee).
    ``not_polled_while_up`` is the part that falls outside the edge's down windows: normally
    only poll jitter, so a large value there is worth a look.
``mismatched``
    Stored rows of this edge that are no served sample (values differ from every sample of
    that machine): corruption, reported beside ``lost``.
``recovered_s``
    Seconds from the end of the fault until every reading the edge had committed by then is
    stored (or counted as dropped or dead-lettered).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg

from shared.catalog import CORE_SENSOR_NAMES


@dataclass
class Lineage:
    """The sequence numbers of one buffer file: ``start`` up to ``end`` (exclusive)."""

    start: int
    end: int | None = None
    dropped: int = 0
    rejected_dropped: int = 0
    rejected: set[int] = field(default_factory=set)


@dataclass
class Ledger:
    edge_id: str
    lineages: list[Lineage] = field(default_factory=list)
    # (from, to) wall-clock seconds in which the edge could not poll: before its first start,
    # between a kill and the restart.
    down: list[tuple[float, float]] = field(default_factory=list)

    def started(self, next_seq: int) -> None:
        if not self.lineages or self.lineages[-1].end is not None:
            self.lineages.append(Lineage(next_seq))

    def close(
        self,
        end: int,
        dropped: int = 0,
        rejected: set[int] | None = None,
        rejected_dropped: int = 0,
    ) -> None:
        lineage = self.lineages[-1]
        lineage.end = end
        lineage.dropped = dropped
        lineage.rejected = rejected or set()
        lineage.rejected_dropped = rejected_dropped

    def committed(self) -> set[int]:
        seqs: set[int] = set()
        for lineage in self.lineages:
            if lineage.end is not None:
                seqs.update(range(lineage.start, lineage.end))
        return seqs


def read_buffer_file(path: Path) -> tuple[int, int, set[int], int]:
    """(next_seq, dropped_total, rejected seqs, rejected dropped) of a stopped edge's buffer."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        newest = conn.execute("SELECT max(seq) FROM readings").fetchone()[0]
        rejected = {int(s) for (s,) in conn.execute("SELECT seq FROM rejected")}
        last = max(int(v) for v in (meta.get("last_seq"), newest, -1) if v is not None)
        rejected_dropped = int(meta.get("rejected_dropped_total", 0) or 0)
        return last + 1, int(meta.get("dropped_total", 0) or 0), rejected, rejected_dropped
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class Served:
    machine: str
    sample: int
    ts_ms: int
    device_ts_ms: int
    values: tuple[float | None, ...]


def read_record(path: Path) -> list[Served]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(samples)")}
        device = "device_ts_ms" if "device_ts_ms" in columns else "ts_ms"
        rows = conn.execute(
            f'SELECT machine_id, sample, ts_ms, coalesce({device}, ts_ms), "values" FROM samples'
        ).fetchall()
    finally:
        conn.close()
    out = []
    for machine, sample, ts_ms, device_ts_ms, values in rows:
        decoded = json.loads(values)
        vector = decoded if isinstance(decoded, list) else [decoded[n] for n in CORE_SENSOR_NAMES]
        out.append(Served(machine, int(sample), int(ts_ms), int(device_ts_ms), tuple(vector)))
    return out


def stored_rows(database_url: str, edge_id: str) -> list[tuple[Any, ...]]:
    cols = ", ".join(f'"{n}"' for n in CORE_SENSOR_NAMES)
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            'SELECT seq, machine_id, (extract(epoch FROM "timestamp") * 1000)::bigint, '
            f"{cols} FROM sensor_readings WHERE edge_id = %s",
            (edge_id,),
        ).fetchall()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int | None
    offset: int | None
    reason: str
    edge_id: str | None
    seq: int | None


def dead_letters(database_url: str, topic: str) -> list[DeadLetter]:
    """This topic's dead letters, with the (edge_id, seq) of those whose payload still
    decodes as JSON (timestamp or detection refused, say)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT kafka_partition, kafka_offset, reason, payload FROM dead_letters "
            "WHERE topic = %s",
            (topic,),
        ).fetchall()
    out = []
    for partition, offset, reason, payload in rows:
        edge_id = seq = None
        try:
            doc = orjson.loads(bytes(payload or b""))
            if isinstance(doc, dict):
                if isinstance(doc.get("edge_id"), str):
                    edge_id = doc["edge_id"]
                if isinstance(doc.get("seq"), int) and not isinstance(doc.get("seq"), bool):
                    seq = int(doc["seq"])
        except orjson.JSONDecodeError:
            pass
        out.append(DeadLetter(partition, offset, str(reason), edge_id, seq))
    return out


def _in_windows(ts_s: float, windows: list[tuple[float, float]], slack_s: float) -> bool:
    return any(start - slack_s <= ts_s <= end + slack_s for start, end in windows)


def account(
    *,
    database_url: str,
    record: Path,
    ledger: Ledger,
    topic: str,
    final_metrics: dict[str, float] | None,
    slack_s: float = 1.0,
    push_from: float | None = None,
) -> dict[str, Any]:
    """The scenario's numbers (see the module docstring for each definition)."""
    served = read_record(record)
    rows = stored_rows(database_url, ledger.edge_id)
    letters = dead_letters(database_url, topic)

    # -- sequence numbers: committed vs stored / dead-lettered / rejected / dropped --------
    seq_counts = Counter(int(r[0]) for r in rows)
    duplicated_keys = sum(n - 1 for n in seq_counts.values() if n > 1)
    stored_seqs = set(seq_counts)
    lettered_seqs = {d.seq for d in letters if d.edge_id == ledger.edge_id and d.seq is not None}
    rejected = set().union(*(lin.rejected for lin in ledger.lineages)) if ledger.lineages else set()
    dropped = sum(lin.dropped + lin.rejected_dropped for lin in ledger.lineages)
    committed = ledger.committed()
    missing = committed - stored_seqs - lettered_seqs - rejected
    lost_committed = max(0, len(missing) - dropped)
    uncommitted_stored = len(stored_seqs - committed)

    # -- what the last edge process acquired but never committed or counted --------------
    metrics = final_metrics or {}
    acquired = metrics.get("rig_edge_readings_in_total", 0.0)
    writer_dropped = metrics.get("rig_edge_writer_dropped_total", 0.0)
    set_aside = metrics.get("rig_edge_readings_set_aside_total", 0.0)
    queued = metrics.get("rig_edge_writer_queue", 0.0)
    buffered = metrics.get("rig_edge_readings_buffered_total", 0.0)
    # MQTT messages the broker redelivered and the edge recognised as already committed, and
    # messages left unacknowledged for the broker to deliver again: acquired, rightly not
    # committed (again).
    redelivered = metrics.get("rig_edge_mqtt_redelivered_total", 0.0)
    refused = metrics.get("rig_edge_mqtt_refused_total", 0.0)
    not_committed = acquired - buffered - writer_dropped - set_aside - queued
    lost_in_edge = max(0, round(not_committed - redelivered - refused)) if metrics else 0

    # -- samples: stored rows against what the simulator served ---------------------------
    by_time = {(s.machine, s.ts_ms): s for s in served}
    by_values = {(s.machine, s.values): s for s in served}
    matched: Counter[tuple[str, int]] = Counter()
    mismatched = receive_time_rows = device_time_rows = 0
    for row in rows:
        machine, ts_ms, values = row[1], int(row[2]), tuple(row[3:])
        sample = by_time.get((machine, ts_ms))
        if sample is None or sample.values != values:
            sample = by_values.get((machine, values))
        if sample is None:
            mismatched += 1
            continue
        matched[(sample.machine, sample.sample)] += 1
        if ts_ms != sample.ts_ms:
            if ts_ms == sample.device_ts_ms:
                device_time_rows += 1  # the wrong clock went through
            else:
                receive_time_rows += 1  # the edge put its own receive time in
    duplicated_samples = sum(n - 1 for n in matched.values() if n > 1)

    edge_lettered = sum(1 for d in letters if d.edge_id == ledger.edge_id)
    counted = (
        dropped + len(rejected) + round(writer_dropped) + round(set_aside) + len(lettered_seqs)
    )
    unmatched = [s for s in served if (s.machine, s.sample) not in matched]
    not_polled = max(0, len(unmatched) - counted)
    while_up = [s for s in unmatched if not _in_windows(s.ts_ms / 1000, ledger.down, slack_s)]
    lost_pushed = 0
    if push_from is not None:
        # The last samples before the simulator stopped may still be in flight: the final
        # down window (opened when the simulator is stopped) excludes them.
        end = max((start for start, _ in ledger.down), default=float("inf"))
        pushed = [s for s in unmatched if push_from <= s.ts_ms / 1000 < end - slack_s]
        lost_pushed = max(0, len(pushed) - counted)

    return {
        "lost": lost_committed + lost_in_edge + lost_pushed,
        "duplicated": duplicated_keys + duplicated_samples,
        "dropped_counted": dropped
        + len(rejected)
        + round(writer_dropped)
        + round(set_aside)
        + len(letters),
        "served": len(served),
        "committed": len(committed),
        "stored": len(rows),
        "not_polled": not_polled,
        "not_polled_while_up": max(0, len(while_up) - counted),
        "mismatched": mismatched,
        # Rows stored with the edge's receive time because the device clock was outside the
        # acceptance window (counted by the edge, not dropped).
        "clock_replaced": receive_time_rows,
        "detail": {
            "lost_committed": lost_committed,
            "lost_in_edge": lost_in_edge,
            "lost_pushed": lost_pushed,
            "missing_seqs_sample": sorted(missing)[:10],
            "stored_not_committed": uncommitted_stored,
            "duplicated_keys": duplicated_keys,
            "duplicated_samples": duplicated_samples,
            "buffer_dropped": dropped,
            "edge_rejected": len(rejected),
            "writer_dropped": round(writer_dropped),
            "set_aside": round(set_aside),
            "dead_letters": len(letters),
            "dead_letters_of_edge": edge_lettered,
            "dead_letter_reasons": sorted({d.reason[:80] for d in letters})[:8],
            "receive_time_rows": receive_time_rows,
            "device_time_rows": device_time_rows,
            "clock_replaced_metric": round(metrics.get("rig_edge_device_clock_replaced_total", 0)),
            "acquired_last_process": round(acquired),
            "buffered_last_process": round(buffered),
            "lineages": len(ledger.lineages),
            "not_polled_while_up_sample": [
                f"{s.machine}#{s.sample}@{s.ts_ms / 1000:.2f}" for s in while_up[:8]
            ],
            "down_windows": [f"{a:.2f}-{b:.2f}" for a, b in ledger.down],
        },
    }
