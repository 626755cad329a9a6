"""The detection step: every reading is scored before it is buffered and forwarded, and the
result travels in the message. This step uses the sensor thresholds (catalog defaults, with
per-machine overrides); the ML detectors plug in behind the same ``Detector`` interface."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from shared.catalog import SENSORS_BY_NAME, Thresholds
from shared.message import Reading


class RulModel(Protocol):
    """``detector.rul.RulTracker``: readings in (machine, epoch seconds, values), a
    ``detection.rul`` document out for each reading that closed a step."""

    version: str

    def observe(
        self, items: list[tuple[str, float, Mapping[str, float | None]]]
    ) -> dict[int, dict[str, Any]]: ...


class Detector(Protocol):
    def score(self, reading: Reading) -> dict[str, Any]: ...


CATALOG_VERSION = "catalog"
PINNED_SUFFIX = "+pinned"
_Limits = dict[str, tuple[float, float, float, float]]


class ThresholdDetector:
    """Flags a reading whose core values are past their critical limits.

    ``score`` is the largest excursion beyond a limit as a fraction of the sensor's band
    (0 when everything is inside), so operators can rank readings by how far out they are.

    Limits per sensor, first found wins: a local pin (edge YAML ``thresholds:``), the cloud's
    resolved table for the machine (``install_table``, from ``edge.threshold_sync``), the
    ``overrides`` given at construction, the catalog default. Every verdict names the table
    that judged it in ``thresholds_version``: the cloud table's version (or ``catalog``),
    with ``+pinned`` when the machine has local pins.
    """

    method = "thresholds"

    def __init__(
        self,
        overrides: Mapping[str, Mapping[str, Thresholds]] | None = None,
        pins: Mapping[str, Mapping[str, Thresholds]] | None = None,
    ) -> None:
        self._defaults = {name: spec.thresholds() for name, spec in SENSORS_BY_NAME.items()}
        self._overrides = {m: dict(t) for m, t in (overrides or {}).items()}
        self._pins = {m: dict(t) for m, t in (pins or {}).items() if t}
        # Per machine: the cloud's table and its version, one tuple so both are read together.
        self._cloud: dict[str, tuple[str, dict[str, Thresholds]]] = {}
        # Per machine: sensor -> (low, high, warn_low, warn_high) as plain floats (inf for
        # "no limit"), so scoring is a few comparisons per value on the hot path. Kept with
        # the cloud entry they were computed from: an entry installed since makes them stale.
        self._limits: dict[str, tuple[object, object, _Limits]] = {}

    def set_pins(self, pins: Mapping[str, Mapping[str, Thresholds]]) -> None:
        """Replace the local pins (a reloaded edge YAML), between two batches like a table."""
        self._pins = {m: dict(t) for m, t in pins.items() if t}

    def install_table(self, machine_id: str, table: Mapping[str, Thresholds], version: str) -> None:
        """Swap in the cloud's resolved thresholds of one machine. Called from the sync
        thread: the dictionary is replaced whole (one assignment), so a batch being scored
        sees either the old table or the new one, never half of each."""
        self._cloud = {**self._cloud, machine_id: (version, dict(table))}

    def version_of(self, machine_id: str) -> str:
        entry = self._cloud.get(machine_id)
        return self._version(machine_id, entry)

    def _version(self, machine_id: str, entry: tuple[str, dict[str, Thresholds]] | None) -> str:
        version = entry[0] if entry else CATALOG_VERSION
        return version + PINNED_SUFFIX if machine_id in self._pins else version

    def versions(self) -> dict[str, str]:
        machines = set(self._cloud) | set(self._pins)
        return {m: self.version_of(m) for m in sorted(machines)}

    def thresholds_for(self, machine_id: str, sensor: str) -> Thresholds | None:
        entry = self._cloud.get(machine_id)
        return self._resolve(machine_id, sensor, entry[1] if entry else {})

    def _resolve(
        self,
        machine_id: str,
        sensor: str,
        cloud: Mapping[str, Thresholds],
        pins: Mapping[str, Mapping[str, Thresholds]] | None = None,
    ) -> Thresholds | None:
        pinned = (self._pins if pins is None else pins).get(machine_id)
        if pinned and sensor in pinned:
            return pinned[sensor]
        if sensor in cloud:
            return cloud[sensor]
        machine = self._overrides.get(machine_id)
        if machine and sensor in machine:
            return machine[sensor]
        return self._defaults.get(sensor)

    def _limits_for(
        self, machine_id: str, entry: tuple[str, dict[str, Thresholds]] | None
    ) -> _Limits:
        pins = self._pins
        hit = self._limits.get(machine_id)
        if hit is not None and hit[0] is entry and hit[1] is pins:
            return hit[2]
        inf = float("inf")
        cloud = entry[1] if entry else {}
        limits: _Limits = {}
        for name in self._defaults:
            t = self._resolve(machine_id, name, cloud, pins)
            if t is None:
                continue
            wl, wh = t.effective_warn_low, t.effective_warn_high
            limits[name] = (
                -inf if t.low is None else t.low,
                inf if t.high is None else t.high,
                -inf if wl is None else wl,
                inf if wh is None else wh,
            )
        self._limits = {**self._limits, machine_id: (entry, pins, limits)}
        return limits

    def score(self, reading: Reading) -> dict[str, Any]:
        # One read of the machine's cloud entry: the limits and the version named in the
        # verdict come from the same table even while the sync thread installs a new one.
        entry = self._cloud.get(reading.machine_id)
        limits = self._limits_for(reading.machine_id, entry)
        critical: list[str] = []
        warning: list[str] = []
        worst = 0.0
        for name, value in reading.values.items():
            bounds = limits.get(name)
            if bounds is None or value is None:
                continue
            low, high, warn_low, warn_high = bounds
            if value < low or value > high:
                critical.append(name)
                band = (high - low) if high - low not in (0.0, float("inf")) else 1.0
                worst = max(worst, max(low - value, value - high) / abs(band))
            elif value < warn_low or value > warn_high:
                warning.append(name)
        return {
            "method": self.method,
            "is_anomaly": bool(critical),
            "score": round(worst, 6),
            "sensors": critical,
            "warnings": warning,
            "thresholds_version": self._version(reading.machine_id, entry),
        }


class BatchDetector(Protocol):
    """A detector that scores many readings at once (one model call per machine)."""

    def score_batch(self, readings: list[Reading]) -> list[dict[str, Any]]: ...


class CombinedDetector:
    """Thresholds on every reading, plus the machine's ML model once one is installed.

    The thresholds always run: they are the local alarm that needs no model and no cloud.
    The ML result, when there is one, becomes the detection (its method, score, ranked
    sensors, probability ahead) with the threshold verdict kept under ``thresholds``; the
    reading is anomalous if either says so. Models are swapped per machine with one
    dictionary assignment, between two batches, so scoring never sees half a model.

    A model that raises (ONNX Runtime errors are plain ``Exception``s) costs that machine its
    ML verdict for that batch only: the readings keep their threshold detection, the failure
    is counted, and ``failing`` names the machine until its model scores a batch again.
    """

    def __init__(self, thresholds: ThresholdDetector | None = None) -> None:
        self.thresholds = thresholds or ThresholdDetector()
        self._models: dict[str, BatchDetector] = {}
        self._versions: dict[str, str] = {}
        # Remaining useful life, beside the detector: one tracker per machine with a RUL
        # model. It runs whether or not the machine has a detector model.
        self._rul: dict[str, RulModel] = {}
        self.rul_failing: dict[str, str] = {}
        self.failing: dict[str, str] = {}
        self.model_errors_total = 0
        # Called with (machine, exception, first of a burst) for every failed model call.
        self.on_model_error: Callable[[str, Exception, bool], None] | None = None
        self.on_model_recovered: Callable[[str], None] | None = None

    def install(self, machine_id: str, model: BatchDetector, version: str) -> None:
        models = dict(self._models)
        models[machine_id] = model
        self._models = models
        self._versions = {**self._versions, machine_id: version}
        self.failing.pop(machine_id, None)

    def install_rul(self, machine_id: str, model: RulModel) -> None:
        """Swap a machine's RUL model in (between two batches, like ``install``)."""
        self._rul = {**self._rul, machine_id: model}
        self.rul_failing.pop(machine_id, None)

    def versions(self) -> dict[str, str]:
        return dict(self._versions)

    def rul_versions(self) -> dict[str, str]:
        return {m: model.version for m, model in self._rul.items()}

    def score(self, reading: Reading) -> dict[str, Any]:
        return self.score_batch([reading])[0]

    def score_batch(self, readings: list[Reading]) -> list[dict[str, Any]]:
        scored: list[dict[str, Any]] = []
        for result in self.score_batch_checked(readings):
            if isinstance(result, Exception):
                raise result
            scored.append(result)
        return scored

    def score_batch_checked(self, readings: list[Reading]) -> list[dict[str, Any] | Exception]:
        """Like ``score_batch``, but a reading even the thresholds cannot score gets the
        exception in its place instead of failing the batch."""
        results: list[dict[str, Any] | Exception] = []
        for reading in readings:
            try:
                results.append(self.thresholds.score(reading))
            except Exception as exc:  # a malformed reading must not cost the others
                results.append(exc)
        self._add_rul(readings, results)
        models = self._models
        if not models:
            return results
        # Per machine with a model: the readings the thresholds scored, with that verdict.
        by_machine: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for i, (reading, result) in enumerate(zip(readings, results, strict=True)):
            if reading.machine_id in models and not isinstance(result, Exception):
                by_machine.setdefault(reading.machine_id, []).append((i, result))
        for machine_id, scored_by_thresholds in by_machine.items():
            indexes = [i for i, _ in scored_by_thresholds]
            try:
                scored = models[machine_id].score_batch([readings[i] for i in indexes])
                if len(scored) != len(indexes):
                    raise ValueError(f"model returned {len(scored)} results for {len(indexes)}")
                merged = [
                    _merge(threshold, ml)
                    for (_, threshold), ml in zip(scored_by_thresholds, scored, strict=True)
                ]
            except Exception as exc:
                self.model_failed(machine_id, exc)
                continue
            for i, detection in zip(indexes, merged, strict=True):
                results[i] = detection
            if machine_id in self.failing:
                del self.failing[machine_id]
                if self.on_model_recovered is not None:
                    self.on_model_recovered(machine_id)
        return results

    def _add_rul(self, readings: list[Reading], results: list[dict[str, Any] | Exception]) -> None:
        """Attach ``rul`` to the threshold verdicts of the readings that closed a RUL step.
        The ML merge below copies the threshold verdict's keys it keeps, ``rul`` included. A
        RUL model that raises costs that batch its estimates only."""
        trackers = self._rul
        if not trackers:
            return
        by_machine: dict[str, list[int]] = {}
        for i, (reading, result) in enumerate(zip(readings, results, strict=True)):
            if reading.machine_id in trackers and not isinstance(result, Exception):
                by_machine.setdefault(reading.machine_id, []).append(i)
        for machine_id, indexes in by_machine.items():
            try:
                found = trackers[machine_id].observe(
                    [(machine_id, readings[i].ts.timestamp(), readings[i].values) for i in indexes]
                )
            except Exception as exc:
                self.rul_failing[machine_id] = f"{type(exc).__name__}: {exc}"[:500]
                continue
            self.rul_failing.pop(machine_id, None)
            for k, doc in found.items():
                result = results[indexes[k]]
                assert not isinstance(result, Exception)
                result["rul"] = doc

    def model_failed(self, machine_id: str, exc: Exception) -> None:
        """Record that ``machine_id``'s model failed (raised, or produced a detection the
        cloud would refuse); its readings fall back to the threshold verdict."""
        first = machine_id not in self.failing
        self.failing[machine_id] = f"{type(exc).__name__}: {exc}"[:500]
        self.model_errors_total += 1
        if self.on_model_error is not None:
            self.on_model_error(machine_id, exc, first)


def _merge(threshold: dict[str, Any], ml: dict[str, Any]) -> dict[str, Any]:
    merged = dict(ml)
    rul = threshold.get("rul")
    if rul is not None:  # the estimate belongs to the reading, not to the nested verdict
        threshold = {k: v for k, v in threshold.items() if k != "rul"}
    merged["thresholds"] = threshold
    if threshold["is_anomaly"] and not ml.get("is_anomaly"):
        # Only the limits tripped: say so, so the cloud files it under thresholds.
        merged.update(
            method=threshold["method"],
            is_anomaly=True,
            sensors=threshold["sensors"],
            score=threshold["score"],
        )
    merged["warnings"] = threshold["warnings"]
    if "thresholds_version" in threshold:
        merged["thresholds_version"] = threshold["thresholds_version"]
    if rul is not None:
        merged["rul"] = rul
    return merged
