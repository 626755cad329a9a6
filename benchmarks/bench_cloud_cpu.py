"""Cloud ingest cost per reading in CPU time, which a shared machine does not distort the way
it distorts wall-clock rates. On an embedded PostgreSQL, one process does what an
aggregator does with a stream of 50-sensor readings -- decode and validate every message
(``shared.message.decode_reading``), ``cloud.storage.store_readings`` in one transaction
per --batch -- and then a plain binary COPY of as many rows into the same table. Prints
progress on stderr and one JSON object on the last line of stdout:

- ingest_python_us (of which ingest_decode_us) and ingest_pg_us: CPU per reading of this
  process and of its PostgreSQL backend (``/proc/<pid>/stat``); copy_python_us, copy_pg_us
  the same for the plain COPY;
- message_bytes: one encoded reading on the wire (Kafka payload before compression);
- sensor_readings_bytes_per_reading, reading_keys_bytes_per_reading: table + indexes grown
  per stored reading; wal_bytes_per_reading: WAL written per stored reading (store path).

Sizing arithmetic from these numbers is in docs/capacity.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from benchmarks.bench_cloud import _readings
from cloud.db.embedded import EmbeddedPostgres
from cloud.db.migrate import apply_migrations
from cloud.db.partitions import maintain_partitions
from cloud.storage import store_readings
from shared.catalog import CORE_SENSOR_NAMES
from shared.message import decode_reading, encode_reading

_TICK = os.sysconf("SC_CLK_TCK")


def _backend_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _size(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c "
        "WHERE c.oid = %s::regclass OR c.oid IN "
        "(SELECT inhrelid FROM pg_inherits WHERE inhparent = %s::regclass)",
        (table, table),
    ).fetchone()
    return int(row[0]) if row else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=5_000)
    args = parser.parse_args(argv)
    n, batch = args.readings, args.batch
    work = Path(tempfile.mkdtemp(prefix="bench-cloud-cpu-"))
    pg = EmbeddedPostgres(work / "pg")
    result: dict[str, object] = {"readings": n, "batch": batch}
    try:
        url = pg.start()
        apply_migrations(url)
        maintain_partitions(url)
        print("encoding …", file=sys.stderr, flush=True)
        messages = [encode_reading(r) for r in _readings(n + batch, "cpu-ingest")]
        result["message_bytes"] = round(sum(map(len, messages)) / len(messages))
        copied = _readings(n, "cpu-copy")
        # Autocommit: each batch is its own transaction, as in the aggregator.
        with psycopg.connect(url, autocommit=True) as conn:
            pid = conn.info.backend_pid
            now = datetime.now(UTC)
            with conn.transaction():  # warm-up: caches, prepared statements, scorer
                store_readings(conn, [decode_reading(m, now=now) for m in messages[:batch]])
            sizes = {t: _size(conn, t) for t in ("sensor_readings", "reading_keys")}
            lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
            print("storing …", file=sys.stderr, flush=True)
            decode_s = 0.0
            cpu0, pg0 = time.process_time(), _backend_cpu_s(pid)
            for start in range(batch, n + batch, batch):
                t0 = time.process_time()
                readings = [decode_reading(m, now=now) for m in messages[start : start + batch]]
                decode_s += time.process_time() - t0
                with conn.transaction():
                    store_readings(conn, readings)
            cpu1, pg1 = time.process_time(), _backend_cpu_s(pid)
            wal = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn[0] if lsn else None,)
            ).fetchone()
            for table, before in sizes.items():
                result[f"{table}_bytes_per_reading"] = round((_size(conn, table) - before) / n)
            result["wal_bytes_per_reading"] = round(float(wal[0]) / n) if wal else None
            result["ingest_python_us"] = round((cpu1 - cpu0) / n * 1e6, 1)
            result["ingest_decode_us"] = round(decode_s / n * 1e6, 1)
            result["ingest_pg_us"] = round((pg1 - pg0) / n * 1e6, 1)
            print("plain COPY …", file=sys.stderr, flush=True)
            columns = ", ".join(
                f'"{c}"'
                for c in (
                    "edge_id",
                    "seq",
                    "machine_id",
                    "timestamp",
                    *CORE_SENSOR_NAMES,
                    "custom_sensors",
                )
            )
            cpu0, pg0 = time.process_time(), _backend_cpu_s(pid)
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(f"COPY sensor_readings ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types(["text", "int8", "text", "timestamptz", *(["float8"] * 50), "jsonb"])
                for r in copied:
                    copy.write_row(
                        (
                            r.edge_id,
                            r.seq,
                            r.machine_id,
                            r.ts,
                            *(r.values[name] for name in CORE_SENSOR_NAMES),
                            Jsonb({}),
                        )
                    )
            cpu1, pg1 = time.process_time(), _backend_cpu_s(pid)
            result["copy_python_us"] = round((cpu1 - cpu0) / n * 1e6, 1)
            result["copy_pg_us"] = round((pg1 - pg0) / n * 1e6, 1)
    finally:
        pg.stop("immediate")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
