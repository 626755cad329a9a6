"""ML benchmark. Prints progress and numbers, and one JSON object on the last line of stdout:

- score_us_per_reading: the default (hybrid_smart) ONNX detector at the edge, amortised per
  reading when readings are scored in batches of ``--batch`` (one session.run per model and
  batch), 50 core sensors, 4 machines interleaved, after warm-up; also the single-reading
  figure (``score_us_single``);
- skab f1/far/mar: the SKAB protocol (models.evaluate) on the first ``--skab-files`` labelled
  files of valve1 (default 4, to stay under ~3 minutes on 2 cores; ``--skab-files 0`` = all).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from shared.catalog import CORE_SENSORS
from shared.message import Reading


def _data_dir() -> Path:
    root = Path(__file__).resolve().parents[1]
    return Path(os.environ.get("RIG_SHARED_DATA", root.parent / "shared" / "data"))


def _rig_stream(n: int, seed: int = 3) -> np.ndarray:
    """50 core sensors around their typical values with correlated slow load changes."""
    rng = np.random.default_rng(seed)
    typical = np.array([s.typical for s in CORE_SENSORS])
    spread = np.maximum(np.abs(typical) * 0.02, 0.05)
    load = np.sin(np.arange(n) / 13.0)[:, None] * rng.uniform(0.2, 1.0, len(typical))
    return typical + spread * (load + 0.3 * rng.normal(size=(n, len(typical))))


def bench_edge(batch: int, epochs: int) -> dict[str, float]:
    from edge.onnx_detector import OnnxDetector
    from models.ensemble import EnsembleConfig, HybridDetector
    from models.export import export_bundle
    from shared.model_bundle import generate_keypair

    names = [s.name for s in CORE_SENSORS]
    stream = _rig_stream(3000)
    config = EnsembleConfig()
    config = replace(config, lstm=replace(config.lstm, epochs=epochs))
    started = time.perf_counter()
    detector = HybridDetector(config).fit(stream[:1000], names)
    print(
        f"trained on 1000 readings x {len(names)} sensors in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    private, public = generate_keypair()
    with tempfile.TemporaryDirectory() as tmp:
        export_bundle(detector, Path(tmp) / "bundle", private_key=private)
        edge = OnnxDetector(Path(tmp) / "bundle", public)
    now = datetime.now(UTC)
    machines = ["A", "B", "C", "D"]
    readings = [
        Reading(machines[i % 4], "bench", i, now, dict(zip(names, map(float, row), strict=True)))
        for i, row in enumerate(stream[1000:])
    ]
    warm = len(machines) * 40
    for i in range(0, warm, batch):
        edge.score_batch(readings[i : min(i + batch, warm)])
    rest = readings[warm:]
    started = time.perf_counter()
    for i in range(0, len(rest), batch):
        edge.score_batch(rest[i : i + batch])
    batched = (time.perf_counter() - started) / len(rest) * 1e6
    single_set = rest[:400]
    started = time.perf_counter()
    for reading in single_set:
        edge.score(reading)
    single = (time.perf_counter() - started) / len(single_set) * 1e6
    print(
        f"edge hybrid_smart: {batched:.1f} us/reading in batches of {batch}, "
        f"{single:.1f} us for one reading at a time",
        file=sys.stderr,
    )
    return {"score_us_per_reading": round(batched, 2), "score_us_single": round(single, 1)}


def bench_skab(files: int | None) -> dict[str, float]:
    from models.evaluate import evaluate_skab

    data = _data_dir() / "skab" / "valve1"
    started = time.perf_counter()
    totals = evaluate_skab(data, limit=files)
    elapsed = time.perf_counter() - started
    for strategy, c in totals.items():
        print(f"skab {strategy:<17} F1 {c.f1:.3f}  FAR {c.far:6.2f} %  MAR {c.mar:6.2f} %")
    best = totals["hybrid_smart"]
    return {
        "skab_files": files or len(list(data.glob("*.csv"))),
        "skab_f1": round(best.f1, 4),
        "skab_far": round(best.far, 2),
        "skab_mar": round(best.mar, 2),
        "skab_seconds": round(elapsed, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_ml")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5, help="LSTM epochs for the edge model")
    parser.add_argument("--skab-files", type=int, default=4, help="0 = every valve1 file")
    args = parser.parse_args(argv)
    result = {"batch": args.batch}
    result.update(bench_edge(args.batch, args.epochs))
    print(f"score_us_per_reading {result['score_us_per_reading']}")
    result.update(bench_skab(args.skab_files or None))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
