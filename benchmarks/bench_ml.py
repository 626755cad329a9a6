"""ML benchmark. Prints progress and numbers, and one JSON object on the last line of stdout:

- score_us_per_reading: the default (hybrid_smart) ONNX detector at the edge, amortised per
  reading when readings are scored in batches of ``--batch`` (one session.run per model and
  batch), 50 core sensors, 4 machines interleaved, after warm-up; also the single-reading
  figure (``score_us_single``), and per model the ONNX Runtime time alone per reading in the
  same batches (``onnx_us_per_reading``; the rest of ``score_us_per_reading`` is Python);
- edge_pipeline_readings_per_s: the edge daemon's path (detection with thresholds + this
  ONNX model on all 10 machines, SQLite commit with fsync, Kafka with acks=all to a real
  local broker), as bench-edge measures it without the model;
- skab f1/far/mar: the SKAB protocol (models.evaluate) on the first ``--skab-files`` labelled
  files of valve1 (default 4, to stay under ~3 minutes on 2 cores; ``--skab-files 0`` = all).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
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


def _train_bundle(bundle: str, epochs: int, private_key: bytes) -> float:
    """Train on the first 1000 readings and export a signed bundle; returns the seconds."""
    from models.ensemble import EnsembleConfig, HybridDetector
    from models.export import export_bundle
    from models.lstm_autoencoder import LSTMAutoencoder

    names = [s.name for s in CORE_SENSORS]
    config = EnsembleConfig(lstm=LSTMAutoencoder(epochs=epochs))
    started = time.perf_counter()
    detector = HybridDetector(config).fit(_rig_stream(3000)[:1000], names)
    elapsed = time.perf_counter() - started
    export_bundle(detector, bundle, private_key=private_key)
    return elapsed


def bench_edge(batch: int, epochs: int) -> dict[str, float]:
    from edge.onnx_detector import OnnxDetector
    from shared.model_bundle import generate_keypair

    names = [s.name for s in CORE_SENSORS]
    stream = _rig_stream(3000)
    private, public = generate_keypair()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        # Training runs in a child process: TensorFlow's thread pools stay alive after fit and
        # take CPU from ONNX Runtime (a third more time per reading on 2 cores), while the
        # edge this figure stands for never loads TensorFlow.
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            seconds = pool.submit(_train_bundle, str(bundle), epochs, private).result()
        print(
            f"trained on 1000 readings x {len(names)} sensors in {seconds:.1f} s",
            file=sys.stderr,
        )
        edge = OnnxDetector(bundle, public)
        columns = [names.index(s) for s in edge.sensors]
        per_model = _onnx_times(bundle, stream[1000:, columns], batch)
    now = datetime.now(UTC)
    machines = ["A", "B", "C", "D"]
    # Each machine replays its own contiguous quarter of the unseen stream, interleaved with
    # the others: a machine's window must hold its own consecutive readings (every 4th
    # reading of one stream would be a 4x faster signal that the model rightly flags).
    per_machine = (len(stream) - 1000) // len(machines)
    readings = []
    for i in range(per_machine * len(machines)):
        m = i % len(machines)
        row = stream[1000 + m * per_machine + i // len(machines)]
        values = dict(zip(names, map(float, row), strict=True))
        readings.append(Reading(machines[m], "bench", i, now, values))
    warm = len(machines) * 40
    for i in range(0, warm, batch):
        edge.score_batch(readings[i : min(i + batch, warm)])
    rest = readings[warm:]
    started = time.perf_counter()
    flagged = 0
    for i in range(0, len(rest), batch):
        flagged += sum(r["is_anomaly"] for r in edge.score_batch(rest[i : i + batch]))
    batched = (time.perf_counter() - started) / len(rest) * 1e6
    single_set = rest[:400]
    started = time.perf_counter()
    for reading in single_set:
        edge.score(reading)
    single = (time.perf_counter() - started) / len(single_set) * 1e6
    print(
        f"edge hybrid_smart: {batched:.1f} us/reading in batches of {batch}, "
        f"{single:.1f} us for one reading at a time ({flagged} of {len(rest)} flagged)",
        file=sys.stderr,
    )
    print(
        "  onnx runtime alone: "
        + ", ".join(f"{k} {v:.1f} us" for k, v in per_model.items())
        + " per reading",
        file=sys.stderr,
    )
    return {
        "score_us_per_reading": round(batched, 2),
        "score_us_single": round(single, 1),
        "flagged_share": round(flagged / len(rest), 4),
        "onnx_us_per_reading": {k: round(v, 2) for k, v in per_model.items()},
    }


def _onnx_times(bundle: Path, X: np.ndarray, batch: int, repeat: int = 30) -> dict[str, float]:
    """Per component, the best-of-three mean time of ``session.run`` on one batch, per
    reading (one thread, as the edge detector runs it)."""
    import onnxruntime as ort

    manifest = json.loads((bundle / "manifest.json").read_text())
    length = int(manifest["sequence_length"])
    rows = np.ascontiguousarray(X[:batch], dtype=np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(
        np.ascontiguousarray(X[: batch + length - 1], dtype=np.float32), length, axis=0
    ).transpose(0, 2, 1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    out = {}
    for name, spec in manifest["components"].items():
        session = ort.InferenceSession(
            str(bundle / spec["file"]), options, providers=["CPUExecutionProvider"]
        )
        feed = {session.get_inputs()[0].name: windows.copy() if spec["input"] == "window" else rows}
        session.run(None, feed)
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(repeat):
                session.run(None, feed)
            best = min(best, (time.perf_counter() - started) / repeat)
        out[name] = best / batch * 1e6
    return out


def bench_pipeline(epochs: int, count: int) -> dict[str, float]:
    """bench-edge's pipeline benchmark with the ML model installed for every machine."""
    from benchmarks.bench_edge import bench_pipeline as edge_pipeline
    from edge.detection import CombinedDetector
    from edge.onnx_detector import OnnxDetector
    from shared.model_bundle import generate_keypair
    from tools.kafka_broker import KafkaBroker

    private, public = generate_keypair()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            pool.submit(_train_bundle, str(work / "bundle"), epochs, private).result()
        detector = CombinedDetector()
        for i in range(10):  # bench-edge's readings come from machines M00..M09
            model = OnnxDetector(work / "bundle", public)
            detector.install(f"M{i:02d}", model, model.version)
        broker = KafkaBroker(work / "kafka", log_file=work / "kafka.log")
        try:
            bootstrap = broker.start()
            broker.create_topic("bench-ml", partitions=3)
            result = edge_pipeline(work, bootstrap, "bench-ml", count, detector=detector)
        finally:
            broker.stop()
    print(
        f"edge pipeline with the model: {result['pipeline_readings_per_s']} readings/s at "
        f"{result['pipeline_cpu_cores']} cores",
        file=sys.stderr,
    )
    return {
        "edge_pipeline_readings_per_s": result["pipeline_readings_per_s"],
        "edge_pipeline_cpu_cores": result["pipeline_cpu_cores"],
    }


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
    parser.add_argument("--pipeline-readings", type=int, default=50_000)
    args = parser.parse_args(argv)
    result = {"batch": args.batch}
    result.update(bench_edge(args.batch, args.epochs))
    print(f"score_us_per_reading {result['score_us_per_reading']}")
    result.update(bench_pipeline(args.epochs, args.pipeline_readings))
    result.update(bench_skab(args.skab_files or None))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
