"""Fault suite: one fault after another against real processes, with the simulator's record as
ground truth, proving (or not) that every reading reaches PostgreSQL exactly once or is
accounted for.

Each scenario runs ``rig-sim --record``, ``rig-edge``, ``rig-cloud aggregate`` (×1–3) and, where
needed, ``rig-cloud serve``, on its own Kafka topic, edge id and machines, against one real
Kafka broker and one embedded PostgreSQL shared by the whole run:

 1. edge_sigkill          SIGKILL the edge mid-stream; failpoints in its crash windows
    edge_sigkill_mqtt     the same with an MQTT source (QoS 1): redeliveries not stored twice
 2. aggregator_sigkill    one of three aggregators dies at a failpoint, another is SIGKILLed
 3. kafka_stop_30s        the broker stopped for 30 s
 4. kafka_sigkill         the broker killed with SIGKILL
 5. postgres_restart      PostgreSQL stopped (fast) for 10 s, then shut down as by a crash
 6. network_cut_60s       the veth between the edge's network namespace and Kafka down 60 s
 7. edge_disk_full        the edge's buffer on a small tmpfs that fills up (watermark)
    edge_disk_full_hard   the same without a watermark: SQLite itself meets a full disk
 8. corrupt_buffer        the edge started on a buffer file overwritten with garbage
 9. poison_messages       hostile payloads into the topic and to the ingest API
10. device_clock_ahead    device clocks 100 years ahead
11. corrupt_model_bundle  forged and corrupt model bundles offered to a running edge

Scenarios 6 and 7 (both) need root (network namespaces, tmpfs); without it they are skipped, and the
JSON says so. What ``lost``, ``duplicated``, ``dropped_counted``, ``not_polled`` and
``recovered_s`` mean exactly: ``benchmarks/faults/accounting.py``.

Progress and each scenario's details go to stderr, all details to ``results.json`` in the work
directory; the last line of stdout is one JSON object (exit status 1 when anything was lost or
duplicated or a scenario could not be carried out):
``{"scenarios": {NAME: {"lost", "duplicated", "dropped_counted", "recovered_s", ...}},
"scenarios_run": N, "lost": total, "duplicated": total}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.faults.clock import device_clock_ahead
from benchmarks.faults.disk import corrupt_buffer, edge_disk_full, edge_disk_full_hard
from benchmarks.faults.harness import Infra, Scenario, say
from benchmarks.faults.model_bundle import corrupt_model_bundle
from benchmarks.faults.mqtt import edge_sigkill_mqtt
from benchmarks.faults.network import network_cut_60s
from benchmarks.faults.poison import poison_messages
from benchmarks.faults.processes import (
    aggregator_sigkill,
    edge_sigkill,
    kafka_sigkill,
    kafka_stop_30s,
    postgres_restart,
)


@dataclass(frozen=True)
class Spec:
    name: str
    run: Callable[[Scenario], None]
    needs_root: bool = False
    options: dict[str, Any] = field(default_factory=dict)


SCENARIOS = [
    Spec("edge_sigkill", edge_sigkill),
    Spec("edge_sigkill_mqtt", edge_sigkill_mqtt),
    Spec("aggregator_sigkill", aggregator_sigkill),
    Spec("kafka_stop_30s", kafka_stop_30s),
    Spec("kafka_sigkill", kafka_sigkill),
    Spec("postgres_restart", postgres_restart),
    Spec("network_cut_60s", network_cut_60s, needs_root=True),
    Spec("edge_disk_full", edge_disk_full, needs_root=True),
    Spec("edge_disk_full_hard", edge_disk_full_hard, needs_root=True),
    Spec("corrupt_buffer", corrupt_buffer),
    Spec("poison_messages", poison_messages),
    Spec("device_clock_ahead", device_clock_ahead),
    Spec("corrupt_model_bundle", corrupt_model_bundle),
]

# The keys of the one-line summary; everything else goes to results.json and stderr.
SUMMARY_KEYS = (
    "lost",
    "duplicated",
    "dropped_counted",
    "recovered_s",
    "not_polled",
    "not_polled_while_up",
    "mismatched",
    "clock_replaced",
    "stored",
    "seconds",
    "error",
    "skipped",
)


def _restore(infra: Infra) -> None:
    """Whatever a failed scenario left down comes back up for the next one."""
    if not infra.broker.is_running:
        infra.broker.start()
    try:
        import psycopg

        psycopg.connect(infra.database_url, connect_timeout=3).close()
    except Exception:
        infra.pg.start()
    if infra.netns is not None:
        infra.netns.link(up=True)


def run_one(infra: Infra, spec: Spec) -> dict[str, Any]:
    started = time.monotonic()
    say(f"== {spec.name}")
    sc = Scenario(infra, spec.name, **spec.options)
    error = None
    result: dict[str, Any]
    try:
        try:
            spec.run(sc)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            say(f"  FAILED: {error}")
            (sc.dir / "error.txt").write_text(traceback.format_exc())
        try:
            result = sc.finish()
        except Exception as exc:
            result = {"lost": None, "duplicated": None, "dropped_counted": None}
            result["recovered_s"] = None
            error = error or f"accounting failed: {type(exc).__name__}: {exc}"
            (sc.dir / "accounting-error.txt").write_text(traceback.format_exc())
    finally:
        sc.cleanup()
        try:
            _restore(infra)
        except Exception as exc:
            say(f"  could not restore the shared services: {exc}")
    if error:
        result["error"] = error.splitlines()[0][:300]
    result["seconds"] = round(time.monotonic() - started, 1)
    say(f"  {spec.name}: " + json.dumps({k: result.get(k) for k in SUMMARY_KEYS if k in result}))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = [s.name for s in SCENARIOS]
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {names}")
    parser.add_argument("--skip", default="", help="comma-separated scenarios to leave out")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, records)")
    args = parser.parse_args(argv)
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    unknown = (only | skip) - set(names)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {names}")
    chosen = [s for s in SCENARIOS if (not only or s.name in only) and s.name not in skip]

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    import os

    root = os.geteuid() == 0
    infra = Infra(work, want_netns=root and any(s.name == "network_cut_60s" for s in chosen))
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    try:
        say(f"work dir {work}; starting PostgreSQL and Kafka …")
        infra.start()
        for spec in chosen:
            if spec.needs_root and not root:
                results[spec.name] = {"skipped": "needs root (network namespace / tmpfs)"}
                say(f"== {spec.name}: skipped (needs root)")
                continue
            results[spec.name] = run_one(infra, spec)
    finally:
        infra.stop()
    completed = {n: r for n, r in results.items() if "skipped" not in r and not r.get("error")}
    summary = {
        "scenarios": {n: {k: r[k] for k in SUMMARY_KEYS if k in r} for n, r in results.items()},
        "scenarios_run": len(completed),
        "lost": sum(r.get("lost") or 0 for r in results.values()),
        "duplicated": sum(r.get("duplicated") or 0 for r in results.values()),
        "failed": sorted(n for n, r in results.items() if r.get("error")),
        "skipped": sorted(n for n, r in results.items() if "skipped" in r),
        "seconds": round(time.monotonic() - started, 1),
    }
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str))
    say(f"details: {work / 'results.json'}; logs: {work}/*/logs")
    if not args.keep and not summary["failed"]:
        # The data of the shared services is large and says nothing the logs do not.
        for bulky in ("pg", "kafka"):
            shutil.rmtree(work / bulky, ignore_errors=True)
    print(json.dumps(summary, default=str))
    # A gate as well as a report: anything lost or stored twice, or a scenario that could not
    # be carried out, fails the make target.
    return 1 if summary["lost"] or summary["duplicated"] or summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
