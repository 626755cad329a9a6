"""RUL benchmark: the edge's cost of one remaining-useful-life prediction. Prints progress and one
JSON object on the last line of stdout:

- rul_us_single: µs per prediction, one machine's window per ``session.run`` (median of
  ``--reps``), ONNX Runtime on one thread, through ``models.rul.runtime.RulBundle``;
- rul_us_batch64: µs per prediction when 64 machines' windows go in one ``session.run``;
- bundle_bytes: the signed bundle (ONNX graph, manifest, signature) on disk.

The bundle has the C-MAPSS benchmark's architecture (``models.rul.cmapss.CMAPSS_PARAMS``: 5
members of a network and gradient-boosted trees, 50-cycle window) on the 14 FD001 sensors. Cost
and size depend on the architecture, not on how well it is trained, so it is trained for
``--epochs`` (default 1) on the first 30 units of the shared C-MAPSS training file when present
(the trees keep their number and depth on fewer units, and boost in a fraction of the time),
else on synthetic run-to-failure histories of the same shape. Training runs in a child process:
TensorFlow's thread pools would otherwise keep taking CPU from ONNX Runtime, and the edge this
figure stands for never loads TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _data_file() -> Path:
    root = Path(__file__).resolve().parents[1]
    shared = Path(os.environ.get("RIG_SHARED_DATA", root.parent / "shared" / "data"))
    return shared / "cmapss" / "train_FD001.txt"


def _synthetic_runs(n: int, d: int, seed: int = 5) -> list[np.ndarray]:
    """Run-to-failure histories: noise around a level plus a wear term growing towards the end."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(n):
        length = int(rng.integers(150, 300))
        wear = np.linspace(0.0, 1.0, length) ** 3
        runs.append(wear[:, None] * rng.uniform(-1, 1, d) + 0.1 * rng.normal(size=(length, d)))
    return runs


def _train_bundle(bundle: str, epochs: int, private_key: bytes) -> tuple[float, str]:
    from models.rul.cmapss import CMAPSS_PARAMS
    from models.rul.data import FD001_FEATURES, read_units
    from models.rul.estimator import RulEstimator
    from models.rul.export import export_rul_bundle

    path = _data_file()
    if path.is_file():
        runs = [u.features(FD001_FEATURES) for u in read_units(path)[:30]]
        source = str(path)
    else:
        runs = _synthetic_runs(40, len(FD001_FEATURES))
        source = "synthetic"
    started = time.perf_counter()
    model = RulEstimator(**{**CMAPSS_PARAMS, "epochs": epochs}).fit(runs, sensors=FD001_FEATURES)
    elapsed = time.perf_counter() - started
    export_rul_bundle(model, bundle, private_key=private_key)
    return elapsed, source


def _time(fn, reps: int) -> list[float]:
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_rul")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--reps", type=int, default=2000)
    args = parser.parse_args(argv)

    from models.rul.runtime import RulBundle
    from shared.model_bundle import generate_keypair, pack_bundle

    private, public = generate_keypair()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            seconds, source = pool.submit(_train_bundle, str(bundle), args.epochs, private).result()
        print(f"trained on {source} in {seconds:.0f} s ({args.epochs} epochs)", file=sys.stderr)
        bundle_bytes = sum(p.stat().st_size for p in bundle.iterdir() if p.is_file())
        archive = pack_bundle(bundle, Path(tmp) / "bundle.tar.gz")
        scorer = RulBundle(archive, public_key=public, threads=1)
        onnx_bytes = (bundle / scorer.manifest["model"]["file"]).stat().st_size

        rng = np.random.default_rng(1)
        windows = rng.normal(size=(64, scorer.window, scorer.n_sensors)).astype(np.float32)
        one = windows[:1]
        for _ in range(50):
            scorer.run_windows(one)
            scorer.run_windows(windows)
        single = _time(lambda: scorer.run_windows(one), args.reps)
        batch = _time(lambda: scorer.run_windows(windows), max(50, args.reps // 10))

    single_us = statistics.median(single) * 1e6
    p99_us = float(np.percentile(single, 99)) * 1e6
    batch_us = statistics.median(batch) / 64 * 1e6
    print(
        f"RUL bundle {bundle_bytes} bytes (ONNX {onnx_bytes}); single {single_us:.0f} µs "
        f"(p99 {p99_us:.0f}), batch of 64 {batch_us:.1f} µs per prediction"
    )
    print(
        json.dumps(
            {
                "benchmark": "rul",
                "rul_us_single": round(single_us, 1),
                "rul_us_single_p99": round(p99_us, 1),
                "rul_us_batch64": round(batch_us, 2),
                "bundle_bytes": bundle_bytes,
                "onnx_bytes": onnx_bytes,
                "window": scorer.window,
                "sensors": scorer.n_sensors,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
