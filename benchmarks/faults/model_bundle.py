"""Corrupt and forged model bundles offered to a running edge by the real cloud API.

First a good bundle (signed with the cloud's key) goes into service for one machine; then the
registry offers, one after another, a bundle signed with another key, random bytes, the good
bundle with one byte flipped, a tar whose member climbs out of the directory, and an empty
file. Each must be refused (counted in ``rig_edge_model_updates{result="refused"}`` or
``"failed"``), the good model must stay in use, nothing may be written outside the models
directory, and readings must keep flowing throughout.
"""

from __future__ import annotations

import io
import os
import secrets
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from benchmarks.faults.harness import Scenario, ScenarioFailed, say, wait_for
from benchmarks.faults.processes import TAIL_S


def _good_and_forged(machine: str, private: bytes) -> tuple[bytes, bytes, dict[str, Any]]:
    """A real bundle (isolation forest + PCA on the simulator's signal model) signed with
    ``private``, and the same files signed with a key nobody trusts."""
    from models.ensemble import EnsembleConfig, HybridDetector
    from models.export import export_bundle
    from shared.catalog import CORE_SENSOR_NAMES
    from shared.model_bundle import generate_keypair, pack_bundle, sign_bundle
    from simulator.signals import MachineSignals

    signals = MachineSignals(machine, 1)
    x = np.array([signals.step(float(i)) for i in range(600)])
    detector = HybridDetector(EnsembleConfig(components=("isolation_forest", "pca")))
    detector.fit(x, sensors=list(CORE_SENSOR_NAMES))
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "bundle"
        manifest = export_bundle(detector, directory, version="v1", private_key=private)
        good = pack_bundle(directory, Path(tmp) / "good.tar.gz").read_bytes()
        sign_bundle(directory, generate_keypair()[0])
        forged = pack_bundle(directory, Path(tmp) / "forged.tar.gz").read_bytes()
    return good, forged, manifest


def _traversal_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("manifest.json", "../../escaped-by-bundle.txt"):
            data = b'{"format": "rig-alpha-model"}' if name == "manifest.json" else b"owned"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _publish(database_url: str, machine: str, bundle: bytes, manifest: dict[str, Any]) -> int:
    from cloud.lifecycle import registry

    with psycopg.connect(database_url) as conn, conn.transaction():
        row = registry.register(
            conn,
            registry.Candidate(
                machine, manifest["strategy"], {}, manifest, bundle, None, None, 600, "bench"
            ),
            accepted=True,
            reason="fault suite",
            baseline_metrics=None,
        )
    return int(row["id"])


def _updates(sc: Scenario, machine: str) -> dict[str, float]:
    from benchmarks.faults.harness import metric_values

    text = sc.edge_metrics_text() or ""
    return metric_values(text, "rig_edge_model_updates_total", machine=machine)


def corrupt_model_bundle(sc: Scenario) -> None:
    from shared.model_bundle import generate_keypair

    machine = sc.machines[0]
    key = secrets.token_urlsafe(24)
    private, public = generate_keypair()
    (sc.dir / "signing.pub").write_bytes(public)
    (sc.dir / "api-key").write_text(key)
    models_dir = sc.dir / "models"
    say("  training a small good bundle")
    good, forged, manifest = _good_and_forged(machine, private)
    sc.start_aggregator()
    sc.start_api(env={"RIG_INGEST_API_KEY": key})
    sc.start_sim()
    sc.write_edge_config(
        models={
            "cloud_url": sc.api_url,
            "api_key_file": str(sc.dir / "api-key"),
            "public_key_file": str(sc.dir / "signing.pub"),
            "directory": str(models_dir),
            "poll_interval_s": 1,
        }
    )
    sc.start_edge()
    sc.wait_flowing()
    _publish(sc.infra.database_url, machine, good, manifest)
    wait_for(
        lambda: (sc.edge_health() or {}).get("models", {}).get(machine) == "v1",
        60,
        "the good bundle in use",
        [sc.edge] if sc.edge else None,
    )
    say("  good bundle v1 in use; offering bad ones")
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    bad = {
        "forged_signature": forged,
        "random_bytes": os.urandom(32_768),
        "flipped_byte": bytes(flipped),
        "path_traversal_tar": _traversal_tar(),
        "empty": b"",
    }
    outcomes: dict[str, str] = {}
    for label, bundle in bad.items():
        before = _updates(sc, machine)
        stored_before = sc.stored_count()
        _publish(sc.infra.database_url, machine, bundle, manifest)

        def refused(before: dict[str, float] = before) -> bool:
            now = _updates(sc, machine)
            return any(
                now.get(result, 0) > before.get(result, 0) for result in ("refused", "failed")
            )

        try:
            wait_for(
                refused, 30, f"the {label} bundle to be refused", [sc.edge] if sc.edge else None
            )
        except ScenarioFailed as exc:
            outcomes[label] = f"NOT REFUSED ({str(exc).splitlines()[0]})"
            continue
        in_use = (sc.edge_health() or {}).get("models", {}).get(machine)
        after = _updates(sc, machine)
        result = "refused" if after.get("refused", 0) > before.get("refused", 0) else "failed"
        wait_for(lambda n=stored_before: sc.stored_count() > n, 30, "readings after the bundle")
        outcomes[label] = f"{result}; model in use {in_use}"
        if in_use != "v1":
            sc.notes.setdefault("problems", []).append(f"{label}: model in use is {in_use}")
    # The traversal member names ../../: wherever it would land, it is under this scenario.
    escaped = [str(p) for p in sc.dir.rglob("escaped-by-bundle.txt")]
    if escaped:
        sc.notes.setdefault("problems", []).append(f"bundle wrote outside: {escaped}")
    # A refused bundle stays in service at the registry: how often is it fetched again?
    time.sleep(3.0)
    sc.notes["bundles"] = outcomes
    sc.notes["checks_after_refusals"] = _updates(sc, machine)
    sc.fault_ended()
    time.sleep(TAIL_S)
