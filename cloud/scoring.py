"""The cloud's own verdict on readings that arrive without a trusted detection.

Trust rule. A ``detection`` is the platform's own only when an edge sent it for its readings
over an edge channel: the Kafka topic, the ingest API with the edge's per-edge key, or the
bootstrap key (the shared edge secret) for a reading that names its edge. Everything else is
client-supplied: a reading of the integrator edge namespace ``ingest:`` (what the bootstrap
key gets when a post names no edge), and any detection the ingest API marked as the
client's (method prefixed ``client:``; the API marks the detection of every reading posted
with the bootstrap key that names no edge). A client-supplied detection is kept under
``detection.client`` and never drives anomaly rows, alerts or training data: those read the
top-level verdict, which for such readings the cloud computes itself (``"source": "cloud"``).

The verdict is the edge's: the machine's resolved thresholds (machine, fleet, catalog:
``cloud.thresholds.effective``) on every reading, plus the machine's detector in service
(``cloud.lifecycle.registry``) run by ``detector.bundle.BundleScorer``, the ONNX code the
rig runs, merged as the edge merges them. Thresholds and loaded bundles are cached per
process and refreshed when the thresholds table or the model in service changes (one small
query each per batch that needs scoring). A bundle that cannot be loaded or a model that
fails leaves the readings with the thresholds verdict, counted, never lost.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from prometheus_client import Counter

from cloud.thresholds import effective
from shared.logs import log_event
from shared.message import Reading

if TYPE_CHECKING:
    from detector.bundle import BundleScorer

log = logging.getLogger(__name__)

CLIENT_PREFIX = "client:"
INTEGRATOR_EDGE_PREFIX = "ingest:"
SOURCE = "cloud"
_METHOD_MAX = 32

SCORING_FAILURES = Counter(
    "rig_cloud_scoring_failures",
    "Readings the cloud judged by thresholds only because the machine's model failed to load "
    "or to score",
    ["stage"],
)
SCORED = Counter("rig_cloud_scored_readings", "Readings the cloud gave its own verdict", ["method"])


def mark_client(detection: dict[str, Any]) -> dict[str, Any]:
    """The detection a client posted, marked as the client's (it still passes the message
    schema, so it travels through Kafka like any reading)."""
    method = str(detection.get("method", ""))
    if method.startswith(CLIENT_PREFIX):
        return detection
    return {**detection, "method": (CLIENT_PREFIX + method)[:_METHOD_MAX]}


def is_trusted(reading: Reading) -> bool:
    """True when the reading's detection is an edge's own verdict (see the module doc)."""
    d = reading.detection
    if d is None or reading.edge_id.startswith(INTEGRATOR_EDGE_PREFIX):
        return False
    return not str(d.get("method", "")).startswith(CLIENT_PREFIX)


def client_part(detection: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the sender posted as detection, from a stored one (redeliveries compare this)."""
    if detection is not None and detection.get("source") == SOURCE:
        client = detection.get("client")
        return client if isinstance(client, dict) else None
    return detection


# SQL form of ``client_part`` for a table alias: what the content comparison of a redelivery
# looks at, so a reading the cloud scored equals its redelivery whatever the model says now.
def client_part_sql(alias: str) -> str:
    return (
        f"CASE WHEN {alias}.detection->>'source' = '{SOURCE}' "
        f"THEN {alias}.detection->'client' ELSE {alias}.detection END"
    )


_Limits = dict[str, tuple[float, float, float, float]]


class _Model:
    def __init__(self, model_id: int, scorer: BundleScorer | None, error: str | None) -> None:
        self.model_id = model_id
        self.scorer = scorer
        self.error = error
        self.tmp: tempfile.TemporaryDirectory[str] | None = None


class CloudScorer:
    """Per-process caches of thresholds and loaded bundles; ``judge`` gives readings without
    a trusted detection the cloud's verdict."""

    def __init__(self, public_key: bytes | None = None) -> None:
        self._public_key = public_key if public_key is not None else _configured_public_key()
        self._limits: dict[str, _Limits] = {}
        self._thresholds_version: tuple[Any, ...] | None = None
        self._models: dict[str, _Model] = {}

    def judge(self, conn: psycopg.Connection, readings: Sequence[Reading]) -> list[Reading]:
        """The readings as they are to be stored: trusted ones unchanged, the others with the
        cloud's verdict as detection (the client's kept under ``client``)."""
        todo = [i for i, r in enumerate(readings) if not is_trusted(r)]
        if not todo:
            return list(readings)
        batch = [readings[i] for i in todo]
        machines = sorted({r.machine_id for r in batch})
        self._refresh_thresholds(conn)
        verdicts = [self._threshold_verdict(conn, r) for r in batch]
        for machine, model in self._refresh_models(conn, machines).items():
            if model.scorer is None:
                continue
            idx = [k for k, r in enumerate(batch) if r.machine_id == machine]
            try:
                ml = _score(model.scorer, [batch[k] for k in idx], machine)
            except Exception as exc:  # any model failure falls back
                SCORING_FAILURES.labels("score").inc(len(idx))
                log_event(
                    log,
                    logging.WARNING,
                    "cloud model scoring failed; thresholds only",
                    machine=machine,
                    model_id=model.model_id,
                    error=f"{type(exc).__name__}: {exc}"[:500],
                )
                continue
            for k, doc in zip(idx, ml, strict=True):
                verdicts[k] = _merge(verdicts[k], doc)
        out = list(readings)
        methods: dict[str, int] = {}
        for i, verdict in zip(todo, verdicts, strict=True):
            r = readings[i]
            if r.detection is not None:
                verdict["client"] = client_part(r.detection)
            verdict["source"] = SOURCE
            method = verdict["method"]
            methods[method] = methods.get(method, 0) + 1
            # The constructor, not dataclasses.replace: a third of the cost per reading.
            out[i] = Reading(
                r.machine_id, r.edge_id, r.seq, r.ts, r.values, r.custom, r.quality, verdict
            )
        for method, count in methods.items():
            SCORED.labels(method).inc(count)
        return out

    # -- thresholds -------------------------------------------------------------------------

    def _refresh_thresholds(self, conn: psycopg.Connection) -> None:
        row = conn.execute("SELECT count(*), max(updated_at) FROM thresholds").fetchone()
        version = tuple(row) if row is not None else None
        if version != self._thresholds_version:
            self._limits.clear()
            self._thresholds_version = version

    def _limits_for(self, conn: psycopg.Connection, machine_id: str) -> _Limits:
        limits = self._limits.get(machine_id)
        if limits is None:
            inf = math.inf
            limits = {}
            for sensor, t in effective(conn, machine_id).items():
                limits[sensor] = (
                    -inf if t.critical_low is None else t.critical_low,
                    inf if t.critical_high is None else t.critical_high,
                    -inf if t.warn_low is None else t.warn_low,
                    inf if t.warn_high is None else t.warn_high,
                )
            self._limits[machine_id] = limits
        return limits

    def _threshold_verdict(self, conn: psycopg.Connection, reading: Reading) -> dict[str, Any]:
        """The edge's threshold rule (``edge.detection.ThresholdDetector.score``) on the
        cloud's resolved table, custom sensors included."""
        limits = self._limits_for(conn, reading.machine_id)
        critical: list[str] = []
        warning: list[str] = []
        worst = 0.0
        for values in (reading.values, reading.custom):
            for name, value in values.items():
                bounds = limits.get(name)
                if bounds is None or value is None:
                    continue
                low, high, warn_low, warn_high = bounds
                if value < low or value > high:
                    critical.append(name)
                    band = (high - low) if high - low not in (0.0, math.inf) else 1.0
                    worst = max(worst, max(low - value, value - high) / abs(band))
                elif value < warn_low or value > warn_high:
                    warning.append(name)
        return {
            "method": "thresholds",
            "is_anomaly": bool(critical),
            "score": round(worst, 6),
            "sensors": critical,
            "warnings": warning,
        }

    # -- models -----------------------------------------------------------------------------

    def _refresh_models(self, conn: psycopg.Connection, machines: list[str]) -> dict[str, _Model]:
        rows = conn.execute(
            "SELECT machine_id, id FROM model_registry WHERE kind = 'detector' "
            "AND status = 'active' AND machine_id = ANY(%s)",
            (machines,),
        ).fetchall()
        in_service = {str(m): int(i) for m, i in rows}
        found: dict[str, _Model] = {}
        for machine in machines:
            model_id = in_service.get(machine)
            cached = self._models.get(machine)
            if model_id is None:
                self._drop(machine)
                continue
            if cached is None or cached.model_id != model_id:
                self._drop(machine)
                cached = self._load(conn, machine, model_id)
                self._models[machine] = cached
            if cached.scorer is None:
                # Loaded once per model and failed: its readings stay thresholds-only.
                SCORING_FAILURES.labels("load").inc()
            found[machine] = cached
        return found

    def _drop(self, machine: str) -> None:
        old = self._models.pop(machine, None)
        if old is not None and old.tmp is not None:
            old.tmp.cleanup()

    def _load(self, conn: psycopg.Connection, machine: str, model_id: int) -> _Model:
        row = conn.execute(
            "SELECT bundle, bundle_sha256 FROM model_registry WHERE id = %s", (model_id,)
        ).fetchone()
        model = _Model(model_id, None, None)
        tmp = tempfile.TemporaryDirectory(prefix="rig-cloud-model-")
        try:
            # Imported here: without onnxruntime installed the cloud still judges by
            # thresholds, and counts every model it could not load.
            from detector.bundle import BundleScorer

            if row is None:
                raise ValueError(f"model {model_id} is gone")
            data = bytes(row[0])
            if hashlib.sha256(data).hexdigest() != row[1]:
                raise ValueError("bundle does not match its recorded bundle_sha256")
            archive = Path(tmp.name) / "bundle.tar.gz"
            archive.write_bytes(data)
            if self._public_key is not None:
                scorer = BundleScorer(archive, self._public_key)
            else:
                # No key configured: the bytes are the registry's own (checked above); the
                # scorer still checks every file against the manifest's SHA-256.
                directory = Path(tmp.name) / "bundle"
                with tarfile.open(archive) as tar:
                    tar.extractall(directory, filter="data")
                scorer = BundleScorer(directory, None)
        except Exception as exc:  # a bad bundle must not stop storage
            tmp.cleanup()
            model.error = f"{type(exc).__name__}: {exc}"[:500]
            log_event(
                log,
                logging.WARNING,
                "cloud could not load the model in service; thresholds only",
                machine=machine,
                model_id=model_id,
                error=model.error,
            )
            return model
        model.scorer, model.tmp = scorer, tmp
        return model


def _score(scorer: BundleScorer, readings: list[Reading], machine: str) -> list[dict[str, Any]]:
    """The model's verdict per reading, as ``edge.onnx_detector.OnnxDetector`` writes it."""
    nan = math.nan
    X = np.array(
        [[_finite(r.values.get(s, nan)) for s in scorer.sensors] for r in readings],
        dtype=np.float64,
    )
    scored = scorer.score_rows(X, machine)
    score_list = np.round(scored.score, 6).tolist()
    warming = scored.warming_up.tolist()
    prob = scored.probability_ahead
    prob_list = np.round(prob, 4).tolist() if prob is not None else None
    out = []
    for i in range(len(readings)):
        top = scored.contributions.get(i, [])
        doc: dict[str, Any] = {
            "method": scorer.strategy,
            "is_anomaly": i in scored.contributions,
            "score": score_list[i],
            "sensors": [c["sensor"] for c in top],
            "contributions": top,
            "model_version": scorer.version,
        }
        if prob_list is not None:
            p = prob_list[i]
            doc["probability_ahead"] = None if math.isnan(p) else p
        if warming[i]:
            doc["warming_up"] = True
        if i in scored.missing:
            doc["missing_sensors"] = scored.missing[i]
        out.append(doc)
    return out


def _finite(value: float | None) -> float:
    return math.nan if value is None else value


def _merge(threshold: dict[str, Any], ml: dict[str, Any]) -> dict[str, Any]:
    """As the edge merges (``edge.detection._merge``): the model's verdict with the thresholds
    nested; limits that tripped while the model did not make it a thresholds anomaly."""
    merged = dict(ml)
    merged["thresholds"] = threshold
    if threshold["is_anomaly"] and not ml.get("is_anomaly"):
        merged.update(
            method=threshold["method"],
            is_anomaly=True,
            sensors=threshold["sensors"],
            score=threshold["score"],
        )
    merged["warnings"] = threshold["warnings"]
    return merged


def _configured_public_key() -> bytes | None:
    """RIG_MODEL_PUBLIC_KEY_FILE, else the public half of RIG_MODEL_SIGNING_KEY_FILE: then
    bundles are verified by signature as at the edge."""
    path = os.environ.get("RIG_MODEL_PUBLIC_KEY_FILE")
    if path:
        return Path(path).read_bytes()
    private = os.environ.get("RIG_MODEL_SIGNING_KEY_FILE")
    if private:
        from cryptography.hazmat.primitives import serialization

        from shared.model_bundle import load_private_key

        key = load_private_key(Path(private).read_bytes()).public_key()
        return key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return None


@functools.cache
def default_scorer() -> CloudScorer:
    """The process's scorer (its caches live as long as the process)."""
    return CloudScorer()
