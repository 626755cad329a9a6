"""Alarm thresholds from the cloud: polled, checked, applied between two batches, kept on disk.

For every machine this edge reads (configured, or seen in its readings: MQTT-only machines),
the cloud is asked for the machine's resolved thresholds
(machine override, else fleet, else catalog: ``GET /api/v1/edge/thresholds/{machine}``, with
the edge's own key, the one model sync uses). The answer carries a ``version`` (a hash of the
table); a new version is checked field by field, swapped into the threshold detector
(``ThresholdDetector.install_table``: one dictionary assignment, so the next batch is judged by
it and no batch sees half a table) and written atomically to
``<models.directory>/.thresholds/<machine>.json``. At start-up those copies are loaded (and
checked again) before the first reading, so an edge restarted without network judges by the
last table it had, not by the catalog. Pins in the edge YAML (``thresholds:``) win over every
table (``ThresholdDetector``). Each verdict names the table that judged it
(``detection.thresholds_version``).

Nothing the server says is trusted before it is checked: the answer is bounded in size, the
machine must be the one asked for, the version must match the wire rule, each limit is a
finite number and the four make a threshold (the cloud's own rules: ``threshold_problem``).
An answer that fails is refused whole (logged, counted in ``health()``); the table in use stays.
The sync thread never dies of an error: a failing poll backs off.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from edge.config import ModelsConfig, threshold_problem
from edge.detection import ThresholdDetector
from shared.catalog import SENSORS_BY_NAME, Thresholds
from shared.logs import log_event
from shared.message import CUSTOM_NAME_RE, MACHINE_ID_RE, THRESHOLDS_VERSION_RE

log = logging.getLogger(__name__)

URL_PREFIX = "/api/v1/edge/thresholds/"
# Hidden folder beside the model bundles: no machine id starts with a dot, and the model
# store's clean-up skips hidden entries.
FOLDER = ".thresholds"
# A table is a few hundred sensors of four numbers: anything bigger is not one.
MAX_ANSWER_BYTES = 256 << 10
MAX_BACKOFF_FACTOR = 4
# Machines one edge serves at most (configured and seen in the data): a stream of made-up
# machine ids must not grow the poll without bound.
MAX_MACHINES = 1000
_LIMITS = ("critical_low", "critical_high", "warn_low", "warn_high")


class RefusedThresholdsError(ValueError):
    """The cloud's thresholds answer (or the copy on disk) is malformed; names the field."""


@dataclass(frozen=True)
class ThresholdTable:
    machine_id: str
    version: str
    # Core sensors only: the edge judges core values (custom sensors have no limits here).
    thresholds: dict[str, Thresholds]
    document: dict[str, Any]  # the checked answer, as written to disk


def parse_thresholds(body: bytes, machine: str) -> ThresholdTable:
    """Validate the answer of ``GET /api/v1/edge/thresholds/{machine}``; raises
    ``RefusedThresholdsError`` naming the offending field."""
    if len(body) > MAX_ANSWER_BYTES:
        raise RefusedThresholdsError(f"$: {len(body)} bytes; at most {MAX_ANSWER_BYTES}")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise RefusedThresholdsError(f"$: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RefusedThresholdsError(f"$: a {type(doc).__name__}, not an object")
    if doc.get("machine_id") != machine:
        raise RefusedThresholdsError(
            f"machine_id: {_clip(doc.get('machine_id'))} is not {machine!r}"
        )
    version = doc.get("version")
    if not isinstance(version, str) or not THRESHOLDS_VERSION_RE.fullmatch(version):
        raise RefusedThresholdsError(
            f"version: {_clip(version)} is not 1-64 letters, digits or '_.:+-'"
        )
    entries = doc.get("thresholds")
    if not isinstance(entries, dict):
        raise RefusedThresholdsError("thresholds: expected an object of sensor to limits")
    table: dict[str, Thresholds] = {}
    for sensor, entry in entries.items():
        where = f"thresholds.{str(sensor)[:64]}"
        if not CUSTOM_NAME_RE.fullmatch(sensor):  # core names match the custom rule too
            raise RefusedThresholdsError(f"{where}: not a sensor name")
        if not isinstance(entry, dict):
            raise RefusedThresholdsError(f"{where}: expected an object")
        values = [entry.get(name) for name in _LIMITS]
        problem = threshold_problem(*values, warn_order=False)
        if problem is not None:
            raise RefusedThresholdsError(f"{where}.{problem[0]}: {problem[1]}")
        if sensor in SENSORS_BY_NAME:
            low, high, warn_low, warn_high = (None if v is None else float(v) for v in values)
            table[sensor] = Thresholds(low, high, warn_low, warn_high)
    return ThresholdTable(machine, version, table, doc)


def _clip(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


class ThresholdSync:
    def __init__(
        self,
        config: ModelsConfig,
        machines: list[str],
        detector: ThresholdDetector,
    ) -> None:
        self.config = config
        self.machines = sorted(set(machines))
        # Configured machines, plus those seen in the data (MQTT-only machines are known only
        # from their readings: ``observe``) or saved by an earlier run. Replaced whole.
        self._known: frozenset[str] = frozenset(self.machines)
        self.detector = detector
        self.directory = config.directory / FOLDER
        self.installed: dict[str, str] = {}  # machine -> version in use (from the cloud)
        verify: bool | str = str(config.ca_file) if config.ca_file else True
        self._client = httpx.Client(
            base_url=config.cloud_url.rstrip("/"),
            timeout=min(config.timeout_s, 30.0),
            verify=verify,
            headers={"X-API-KEY": config.api_key()},
            follow_redirects=False,  # a redirect could lead the key to another host
        )
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # health: written by the sync thread, read by /healthz
        self._refused: dict[str, str] = {}
        self._refused_total = 0
        self._last_success_at: float | None = None
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._failures = 0

    # -- start-up: the last tables the cloud gave -------------------------------------------

    def load_saved(self) -> None:
        """Install each machine's last saved table (checked again). Never raises: a copy that
        does not pass is reported and the machine is judged by pins and the catalog until the
        cloud answers."""
        saved = set()
        if self.directory.is_dir():
            saved = {p.stem for p in self.directory.glob("*.json")}
        self._add(saved)
        for machine in sorted(self._known):
            path = self.directory / f"{machine}.json"
            try:
                body = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                self._refuse(machine, f"saved thresholds not read: {_describe(exc)}")
                continue
            try:
                table = parse_thresholds(body, machine)
            except RefusedThresholdsError as exc:
                self._refuse(machine, f"saved thresholds refused: {exc}")
                continue
            self._apply(table, source="disk")

    # -- machines seen in the data ----------------------------------------------------------

    def observe(self, machine_ids: Iterable[str]) -> list[str]:
        """Serve the machines of readings the edge takes (called per batch from the daemon:
        a set lookup per distinct id when none is new). Their tables are fetched from the
        next poll on; until then the catalog and pins judge them."""
        known = self._known
        new = [m for m in set(machine_ids) if m not in known]
        return self._add(new) if new else []

    def _add(self, machine_ids: Iterable[str]) -> list[str]:
        with self._lock:
            room = MAX_MACHINES - len(self._known)
            added = sorted(m for m in set(machine_ids) - self._known if MACHINE_ID_RE.fullmatch(m))[
                : max(room, 0)
            ]
            if added:
                self._known = self._known | frozenset(added)
        if added:
            log_event(log, logging.INFO, "threshold sync serves machines", machines=added)
        return added

    # -- the poll loop ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="threshold-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=min(self.config.timeout_s, 30.0) + 5)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # the loop must outlive any one poll
                self._failed(f"poll failed: {_describe(exc)}")
            self._stop.wait(self._next_delay())

    def _next_delay(self) -> float:
        with self._lock:
            failures = self._failures
        factor = min(2 ** max(failures - 1, 0), MAX_BACKOFF_FACTOR)
        return self.config.thresholds_poll_s * factor

    def poll_once(self) -> list[str]:
        """Ask for every machine's table once; returns the machines whose table changed. A
        machine the cloud did not answer for makes the poll a failed one; a refused answer
        does not (the cloud answered, the edge said no)."""
        changed: list[str] = []
        errors: list[str] = []
        for machine in sorted(self._known):
            if self._stop.is_set():
                break
            try:
                body = self._get(machine)
            except httpx.HTTPError as exc:
                errors.append(f"{machine}: {_describe(exc)}")
                continue
            try:
                table = parse_thresholds(body, machine)
            except RefusedThresholdsError as exc:
                self._refuse(machine, f"answer refused: {exc}")
                continue
            if self.installed.get(machine) == table.version:
                continue
            self._apply(table, source="cloud")
            try:
                self._save(table)
            except OSError as exc:
                # Judged by it now; a restart without network falls back to the older copy.
                log_event(
                    log,
                    logging.ERROR,
                    "thresholds not saved for offline restarts",
                    machine_id=machine,
                    error=_describe(exc),
                )
            changed.append(machine)
        if errors:
            self._failed("; ".join(errors))
        else:
            with self._lock:
                self._failures = 0
                self._last_success_at = time.time()
        return changed

    def _get(self, machine: str) -> bytes:
        with self._client.stream("GET", f"{URL_PREFIX}{machine}") as response:
            response.raise_for_status()
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    break  # parse_thresholds refuses it, naming the size
            return bytes(body)

    def _apply(self, table: ThresholdTable, source: str) -> None:
        previous = self.installed.get(table.machine_id)
        self.detector.install_table(table.machine_id, table.thresholds, table.version)
        self.installed[table.machine_id] = table.version
        with self._lock:
            self._refused.pop(table.machine_id, None)
        log_event(
            log,
            logging.INFO,
            "thresholds installed",
            machine_id=table.machine_id,
            version=table.version,
            previous=previous,
            source=source,
            judged_by=self.detector.version_of(table.machine_id),
        )

    def _save(self, table: ThresholdTable) -> None:
        """Write the checked answer atomically: a crash leaves the old copy or the new one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{table.machine_id}.json"
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(json.dumps(table.document, sort_keys=True).encode())
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _refuse(self, machine: str, reason: str) -> None:
        with self._lock:
            first = self._refused.get(machine) != reason
            self._refused[machine] = reason
            self._refused_total += 1
        if first:  # the same refusal on every poll is logged once
            log_event(
                log,
                logging.ERROR,
                "thresholds refused; the table in use stays",
                machine_id=machine,
                reason=reason,
                judged_by=self.detector.version_of(machine),
            )

    def _failed(self, error: str) -> None:
        with self._lock:
            self._failures += 1
            first = self._failures == 1
            self._last_error = error[:1000]
            self._last_error_at = time.time()
        if first:
            log_event(
                log,
                logging.WARNING,
                "threshold poll failed; judging by the tables in use",
                error=error[:1000],
            )

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {
                "running": self._thread is not None and self._thread.is_alive(),
                "versions": self.detector.versions(),
                "last_success_at": _iso(self._last_success_at),
                "last_error": self._last_error,
                "last_error_at": _iso(self._last_error_at),
                "consecutive_failures": self._failures,
                "refused": dict(self._refused),
                "refused_total": self._refused_total,
            }
