"""Model updates from the cloud: poll, download, verify, hot-swap, and keep for offline use.

For every machine this edge reads, the cloud is asked which model is in service
(``GET /api/v1/edge/models/{machine}``). Its signed statement (``shared.model_statement``)
is checked first: this machine, this model and bundle, not expired, and not older than the
model in use unless it is a signed rollback (``require_statement: false`` lets a model
without one through with a warning, for clouds not yet upgraded). A new one is then
downloaded, its Ed25519 signature and file hashes verified against the trusted keys (several
during a key rotation, picked by key id), loaded with ONNX Runtime, and only then swapped
in (``CombinedDetector.install``). A bundle that fails any check is refused, counted and
logged; the model in use stays. Installed bundles are kept on disk with a ``current.json``
per machine, so after a restart without network the last verified model runs again
(verified once more before loading).

Nothing the server says is trusted before it is checked: ``bundle_sha256`` must be 64
lowercase hex digits (it names a directory), ``bundle_url`` a relative path under
``/api/v1/edge/models/`` (the API key is never sent anywhere else), the download is streamed
under a byte limit and must hash to ``bundle_sha256``, and the archive is read under
``shared.model_bundle.BundleLimits``. Any error while loading a bundle, ONNX Runtime's
included, refuses that bundle and keeps the previous model. A refused answer is remembered
(by its exact bytes) so the same bundle is not downloaded again on every poll.

The remaining-useful-life model of a machine travels the same way in a second ``ModelSync``
(``kind="rul"``: ``GET /api/v1/edge/models/{machine}/rul``, bundles kept under
``models/.rul/{machine}``, installed with ``CombinedDetector.install_rul``): the same limits,
signature check, hot-swap, refusal and offline restart.

The sync thread never dies of an error: each poll is guarded, a failing poll backs off, and
``health()`` reports the last successful poll and the last error for ``/healthz``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from detector.rul import RulBundle, RulTracker
from edge.config import ModelsConfig
from edge.detection import CombinedDetector
from edge.metrics import EdgeMetrics
from edge.onnx_detector import OnnxDetector
from shared.logs import log_event
from shared.message import MACHINE_ID_RE, Reading
from shared.model_bundle import (
    BundleError,
    TamperedBundleError,
    WrongKeyError,
    extract_bundle,
    signer_key_id,
)
from shared.model_statement import (
    Running,
    Statement,
    StatementError,
    trusted_keys,
    verify_statement,
)

log = logging.getLogger(__name__)

CURRENT = "current.json"
# Bundles kept per machine: the one in use and the one before (a cloud rollback then needs no
# download).
KEEP = 2
# Download cap for one bundle. Real bundles are a few MB; the models directory shares the
# disk with the reading buffer, so a hostile or broken server must not be able to fill it.
# Used until ModelsConfig has a ``max_bundle_bytes`` field (then that value wins).
DEFAULT_MAX_BUNDLE_BYTES = 64 << 20
# The model-info answer is a small JSON object; anything bigger is not one.
MAX_INFO_BYTES = 64 << 10
# httpx's timeout bounds each read, not the transfer: a server dripping one byte at a time
# would otherwise hold the sync thread for ever.
DOWNLOAD_DEADLINE_S = 600.0
CHUNK_BYTES = 64 << 10
# A failing poll waits longer each time, up to this many poll intervals.
MAX_BACKOFF_FACTOR = 4
TEMP_PREFIX = ".download-"
BUNDLE_URL_PREFIX = "/api/v1/edge/models/"
SHA256_RE = re.compile(r"[0-9a-f]{64}")
# Path segments of plain characters only: no scheme, host, query, percent-escapes,
# backslashes or empty segments; "." and ".." are refused separately.
_BUNDLE_PATH_RE = re.compile(re.escape(BUNDLE_URL_PREFIX) + r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")
MAX_MODEL_ID = 2**63 - 1
# Machine id of the probe reading scored when a model loads: not a valid machine id, so the
# probe never shares rolling state with a real machine.
PROBE_MACHINE = "~load-probe"
# Machines learned from the data (MQTT and Sparkplug machines have no id in the config),
# beside the configured ones: bounded, so a publisher inventing ids cannot grow the poll
# (one request per machine and interval) without limit.
MAX_SEEN_MACHINES = 256


class RefusedAnswerError(BundleError):
    """The cloud's answer about a model is malformed; the field is named in the message."""


@dataclass(frozen=True)
class ModelInfo:
    model_id: int
    bundle_sha256: str
    bundle_url: str
    # The signed statement (shared/model_statement.py), None from a cloud that signs none.
    statement: dict[str, Any] | None = None


def parse_model_info(body: bytes) -> ModelInfo:
    """Validate the answer of ``GET /api/v1/edge/models/{machine}``; raises
    ``RefusedAnswerError`` naming the offending field."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise RefusedAnswerError(f"model info is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RefusedAnswerError(f"model info is a {type(doc).__name__}, not an object")
    model_id = doc.get("model_id")
    # bool is an int in Python; a registry id is never true/false.
    if type(model_id) is not int or not 1 <= model_id <= MAX_MODEL_ID:
        raise RefusedAnswerError(f"model_id: {_clip(model_id)} is not a positive 64-bit integer")
    sha = doc.get("bundle_sha256")
    if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha):
        raise RefusedAnswerError(
            f"bundle_sha256: {_clip(sha)} is not 64 lowercase hexadecimal digits"
        )
    url = doc.get("bundle_url")
    if not isinstance(url, str) or not valid_bundle_url(url):
        raise RefusedAnswerError(
            f"bundle_url: {_clip(url)} is not a relative path under {BUNDLE_URL_PREFIX}"
        )
    statement = doc.get("statement")
    if statement is not None and not isinstance(statement, dict):
        raise RefusedAnswerError(f"statement: {_clip(statement)} is not an object")
    return ModelInfo(model_id, sha, url, statement)


def valid_bundle_url(url: str) -> bool:
    if not _BUNDLE_PATH_RE.fullmatch(url):
        return False
    segments = url.split("/")
    return not any(s in (".", "..") for s in segments) and httpx.URL(url).is_relative_url


def _clip(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Stopping(Exception):
    """The daemon is stopping: abandon the download (not an error of the bundle)."""


class ModelSync:
    def __init__(
        self,
        config: ModelsConfig,
        machines: list[str],
        detector: CombinedDetector,
        metrics: EdgeMetrics,
        max_bundle_bytes: int | None = None,
        kind: str = "detector",
    ) -> None:
        if kind not in ("detector", "rul"):
            raise ValueError(f"kind: {kind!r} is neither 'detector' nor 'rul'")
        self.kind = kind
        self.config = config
        # RUL bundles beside the detectors' in a hidden folder: no machine id starts with a
        # dot, and the detector's clean-up of old bundles skips hidden entries.
        self._root = config.directory if kind == "detector" else config.directory / ".rul"
        self.machines = sorted(set(machines))
        self._configured = frozenset(self.machines)
        self._known: frozenset[str] = self._configured
        # Learned from readings (``observe``) or from bundles installed by an earlier run.
        self._seen: set[str] = set()
        self._seen_refused = 0
        # Seen machines whose installed bundle the sync thread has yet to load.
        self._to_load: list[str] = []
        self.detector = detector
        self.metrics = metrics
        self.keys = trusted_keys(p.read_bytes() for p in config.key_files())
        self.public_key = next(iter(self.keys.values()))  # the first trusted key
        # What each machine runs, from its statement: the floor a new statement must clear
        # (absent for a model installed without one).
        self._running: dict[str, Running] = {}
        self.max_bundle_bytes = max_bundle_bytes or int(
            getattr(config, "max_bundle_bytes", None) or DEFAULT_MAX_BUNDLE_BYTES
        )
        self.installed: dict[str, int] = {}
        verify: bool | str = str(config.ca_file) if config.ca_file else True
        self._client = httpx.Client(
            base_url=config.cloud_url.rstrip("/"),
            timeout=config.timeout_s,
            verify=verify,
            headers={"X-API-KEY": config.api_key()},
            follow_redirects=False,  # a redirect could lead the key to another host
        )
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # Health, written by the sync thread and read by /healthz: guarded by one lock.
        self._lock = threading.Lock()
        self._remembered: dict[str, int] = {}
        self._refused_answers: dict[str, str] = {}  # machine -> sha256 of the refused answer
        self._refused: dict[str, dict[str, Any]] = {}
        self._refused_total = 0
        self._last_poll_at: float | None = None
        self._last_success_at: float | None = None
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._failures = 0

    # -- start-up: what was verified before -------------------------------------------------

    def load_installed(self) -> None:
        """Load each machine's last installed bundle (verified again) so detection works
        from the first reading, with or without the cloud. Never raises: a bundle that no
        longer loads is refused and reported, and the machine runs thresholds only until the
        cloud has a good one, so the daemon always starts."""
        # A machine whose model an earlier run installed is served again, seen in the
        # data or not yet: an MQTT-only machine keeps its model across an offline restart.
        self._add_seen(self._installed_before())
        with self._lock:
            self._to_load.clear()
        for machine in self.machines:
            try:
                self._load_installed(machine)
            except Exception as exc:  # any failure refuses that bundle only
                self._refuse(machine, None, f"installed bundle not loaded: {_describe(exc)}")

    def _load_installed(self, machine: str) -> None:
        folder = self._root / machine
        self._remove_stale_downloads(folder)
        current = folder / CURRENT
        if not current.is_file():
            return
        doc = json.loads(current.read_text())
        model_id = doc["model_id"]
        if type(model_id) is not int:
            raise ValueError(f"{current}: model_id {_clip(model_id)} is not an integer")
        path = Path(doc["path"])
        # current.json is ours, but a hand edit or a restored backup must not point the
        # loader outside this machine's folder.
        if path.resolve().parent != folder.resolve():
            raise ValueError(f"{current}: path {str(path)!r} is outside {folder}")
        self._activate(machine, path, model_id)
        with self._lock:
            self._remembered[machine] = model_id
        running = doc.get("running")
        if isinstance(running, dict):
            try:
                self._running[machine] = Running(
                    int(running["model_id"]),
                    int(running["version"]),
                    datetime.fromisoformat(running["issued_at"]),
                )
            except (KeyError, TypeError, ValueError) as exc:  # the model itself loaded
                log_event(
                    log,
                    logging.WARNING,
                    "downgrade floor in current.json unreadable; next statement sets it",
                    machine=machine,
                    error=_describe(exc),
                )

    def _installed_before(self) -> list[str]:
        if not self._root.is_dir():
            return []
        return sorted(
            p.name
            for p in self._root.iterdir()
            if p.is_dir() and MACHINE_ID_RE.fullmatch(p.name) and (p / CURRENT).is_file()
        )

    # -- machines seen in the data ----------------------------------------------------------

    def observe(self, machine_ids: Iterable[str]) -> list[str]:
        """Serve the machines of readings the edge takes (called from the daemon's hot path:
        a set lookup per distinct id when none is new). Returns the machines new to the
        sync; their models are fetched from the next poll on. Past ``MAX_SEEN_MACHINES``
        learned machines, new ones are counted and not added."""
        known = self._known  # replaced whole under the lock: read without it
        new = [m for m in set(machine_ids) if m not in known]
        if not new:
            return []
        added = self._add_seen(new)
        if added:
            log_event(
                log,
                logging.INFO,
                "model sync serves machines seen in the data",
                kind=self.kind,
                machines=added,
            )
        return added

    def _add_seen(self, machine_ids: Iterable[str]) -> list[str]:
        added: list[str] = []
        with self._lock:
            for machine in sorted(set(machine_ids)):
                if machine in self._configured or machine in self._seen:
                    continue
                if not MACHINE_ID_RE.fullmatch(machine):
                    continue
                if len(self._seen) >= MAX_SEEN_MACHINES:
                    self._seen_refused += 1
                    continue
                self._seen.add(machine)
                self._to_load.append(machine)
                added.append(machine)
            if added:
                # Replaced whole: a poll iterating the old list is not disturbed.
                self._known = self._configured | self._seen
                self.machines = sorted(self._known)
        return added

    def _load_pending(self) -> None:
        """Load the installed bundles of machines learned since the last poll (in the sync
        thread, so the daemon's path never touches the disk)."""
        with self._lock:
            pending, self._to_load = self._to_load, []
        for machine in pending:
            if machine in self.installed:
                continue
            try:
                self._load_installed(machine)
            except Exception as exc:  # any failure refuses that bundle only
                self._refuse(machine, None, f"installed bundle not loaded: {_describe(exc)}")

    def _remove_stale_downloads(self, folder: Path) -> None:
        """A download cut short by a kill leaves its temporary directory behind."""
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            if path.name.startswith(TEMP_PREFIX):
                shutil.rmtree(path, ignore_errors=True)

    # -- polling ------------------------------------------------------------------------------

    def start(self) -> None:
        name = "model-sync" if self.kind == "detector" else "model-sync-rul"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.timeout_s + 5)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # the loop must outlive any one poll
                self._poll_failed(f"poll failed: {_describe(exc)}")
                log_event(
                    log,
                    logging.ERROR,
                    "model poll failed unexpectedly; backing off",
                    error=_describe(exc),
                    retry_in_s=self._next_delay(),
                )
            self._stop.wait(self._next_delay())

    def _next_delay(self) -> float:
        with self._lock:
            failures = self._failures
        factor = min(2 ** max(failures - 1, 0), MAX_BACKOFF_FACTOR)
        return self.config.poll_interval_s * factor

    def poll_once(self) -> list[str]:
        """Check every machine once; returns the machines whose model changed. A machine
        whose check fails (network, server error) makes the poll a failed one; a refused
        bundle does not (the cloud answered, the edge said no)."""
        changed: list[str] = []
        failed: str | None = None
        self._load_pending()
        for machine in self.machines:
            if self._stop.is_set():
                return changed
            try:
                if self._check(machine):
                    changed.append(machine)
            except _Stopping:
                return changed
            except Exception as exc:  # network, disk, or a server's nonsense
                self.metrics.model_updates.labels(self._label(machine), "failed").inc()
                failed = f"{machine}: {_describe(exc)}"
                log_event(
                    log,
                    logging.WARNING,
                    "model check failed; will retry",
                    machine=machine,
                    error=_describe(exc),
                )
        if failed is None:
            with self._lock:
                self._last_poll_at = self._last_success_at = time.time()
                self._failures = 0
        else:
            self._poll_failed(failed)
        return changed

    def _poll_failed(self, error: str) -> None:
        with self._lock:
            self._last_poll_at = self._last_error_at = time.time()
            self._last_error = error
            self._failures += 1

    def _check(self, machine: str) -> bool:
        """True when a new model was installed. A refused answer is handled here (counted,
        logged, remembered); network and disk errors propagate as failures of the poll."""
        body: bytes | None = None
        try:
            body = self._get_info(machine)
            if body is None:
                return False  # no model in service for this machine (yet)
            answer = hashlib.sha256(body).hexdigest()
            with self._lock:
                if self._refused_answers.get(machine) == answer:
                    return False  # refused before: the same answer gets the same verdict
            info = parse_model_info(body)
            if self.installed.get(machine) == info.model_id:
                if self._remembered.get(machine) != info.model_id:
                    # Installed, but current.json could not be written last time.
                    self._remember(machine, self._bundle_dir(machine, info), info.model_id)
                return False
            statement = self._approve(machine, info)
            self._install(machine, info, statement)
            return True
        except BundleError as exc:
            if body is not None:
                with self._lock:
                    self._refused_answers[machine] = hashlib.sha256(body).hexdigest()
            self._refuse(machine, _model_id_of(body), str(exc))
            return False

    def _get_info(self, machine: str) -> bytes | None:
        suffix = "/rul" if self.kind == "rul" else ""
        with self._client.stream("GET", f"{BUNDLE_URL_PREFIX}{machine}{suffix}") as response:
            if response.status_code == 404:
                return None
            response.raise_for_status()
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_INFO_BYTES:
                    raise RefusedAnswerError(f"model info is larger than {MAX_INFO_BYTES} bytes")
            return bytes(body)

    def _approve(self, machine: str, info: ModelInfo) -> Statement | None:
        """Check the signed statement before anything is downloaded: this machine, this
        model and bundle, not expired, not older than the model in use unless a signed
        rollback says so. Raises ``StatementError`` naming the field."""
        if info.statement is None:
            if self.config.require_statement:
                raise StatementError(
                    "statement: the cloud served no signed statement for this model, and "
                    "models.require_statement is true"
                )
            log_event(
                log,
                logging.WARNING,
                "model without a signed statement accepted (models.require_statement is false)",
                machine=machine,
                kind=self.kind,
                model_id=info.model_id,
            )
            return None
        return verify_statement(
            info.statement,
            self.keys,
            machine_id=machine,
            kind=self.kind,
            model_id=info.model_id,
            bundle_sha256=info.bundle_sha256,
            running=self._running.get(machine),
        )

    def _key_for(self, path: Path) -> Any:
        """The trusted key a bundle directory's signature names (rotation: several)."""
        kid = signer_key_id(path)
        if kid is None or kid not in self.keys:
            raise WrongKeyError(
                f"{path}: signed by key {kid!r}, but this edge trusts keys "
                f"{', '.join(sorted(self.keys))}"
            )
        return self.keys[kid]

    def _bundle_dir(self, machine: str, info: ModelInfo) -> Path:
        return self._root / machine / f"{info.model_id}-{info.bundle_sha256[:12]}"

    def _install(self, machine: str, info: ModelInfo, statement: Statement | None = None) -> None:
        target = self._bundle_dir(machine, info)
        downloaded = False
        if not target.is_dir():
            self._download(info, target)
            downloaded = True
        try:
            self._activate(machine, target, info.model_id)
        except BundleError:
            if downloaded:  # nothing refused stays on the disk the buffer needs
                shutil.rmtree(target, ignore_errors=True)
            raise
        if statement is None:
            self._running.pop(machine, None)
        else:
            self._running[machine] = Running(
                statement.model_id, statement.version, statement.issued_at
            )
        self._remember(machine, target, info.model_id)

    def _download(self, info: ModelInfo, target: Path) -> None:
        """Stream the bundle into a temporary directory beside ``target`` under the byte
        limit, check its hash and signature, unpack it there and rename it into place: a
        crash leaves either nothing or a complete, verified bundle."""
        limit = self.max_bundle_bytes
        target.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + DOWNLOAD_DEADLINE_S
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=TEMP_PREFIX) as tmp:
            archive = Path(tmp) / "bundle.tar.gz"
            digest = hashlib.sha256()
            size = 0
            # identity: the bundle is gzip already, and httpx would expand a gzip transfer
            # encoding in memory before the limit could count it.
            headers = {"Accept-Encoding": "identity"}
            with self._client.stream("GET", info.bundle_url, headers=headers) as response:
                response.raise_for_status()
                encoding = response.headers.get("content-encoding", "identity").lower()
                if encoding != "identity":
                    raise RefusedAnswerError(
                        f"bundle_url: answered with content-encoding {encoding!r}"
                    )
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise RefusedAnswerError(
                        f"bundle_url: bundle of {declared} bytes is over the {limit}-byte limit"
                    )
                with archive.open("wb") as out:
                    for chunk in response.iter_raw(CHUNK_BYTES):
                        size += len(chunk)
                        if size > limit:
                            raise RefusedAnswerError(
                                f"bundle_url: download passed the {limit}-byte limit"
                            )
                        if self._stop.is_set():
                            raise _Stopping()
                        if time.monotonic() > deadline:
                            raise TimeoutError(
                                f"bundle download took longer than {DOWNLOAD_DEADLINE_S:.0f} s"
                            )
                        digest.update(chunk)
                        out.write(chunk)
            if digest.hexdigest() != info.bundle_sha256:
                raise TamperedBundleError(
                    f"bundle_sha256: the downloaded bundle hashes to {digest.hexdigest()}, "
                    f"not {info.bundle_sha256}"
                )
            staged = Path(tmp) / "bundle"
            # Verifies signature and hashes before a single file is written out.
            extract_bundle(archive, staged, list(self.keys.values()))
            os.replace(staged, target)

    def _label(self, machine: str) -> str:
        return machine if self.kind == "detector" else f"{machine}:rul"

    def _activate(self, machine: str, path: Path, model_id: int) -> None:
        if self.kind == "rul":
            self._activate_rul(machine, path, model_id)
            return
        try:
            model = OnnxDetector(path, self._key_for(path), strategy=self.config.strategy)
            _probe(model)
        except BundleError:
            raise
        except Exception as exc:  # ONNX Runtime errors derive from Exception
            raise BundleError(f"model {model_id} does not load: {_describe(exc)}") from exc
        self.detector.install(machine, model, model.version)
        with self._lock:
            self.installed[machine] = model_id
            self._refused.pop(machine, None)
        self.metrics.model_updates.labels(machine, "installed").inc()
        self.metrics.model_info.labels(machine).info({"version": model.version})
        log_event(
            log,
            logging.INFO,
            "model in use",
            machine=machine,
            model_id=model_id,
            version=model.version,
            strategy=model.strategy,
        )

    def _activate_rul(self, machine: str, path: Path, model_id: int) -> None:
        try:
            tracker = RulTracker(RulBundle(path, self._key_for(path)))
            _probe_rul(tracker)
        except BundleError:
            raise
        except Exception as exc:  # ONNX Runtime errors derive from Exception
            raise BundleError(f"RUL model {model_id} does not load: {_describe(exc)}") from exc
        self.detector.install_rul(machine, tracker)
        with self._lock:
            self.installed[machine] = model_id
            self._refused.pop(machine, None)
        self.metrics.model_updates.labels(self._label(machine), "installed").inc()
        self.metrics.model_info.labels(self._label(machine)).info({"version": tracker.version})
        log_event(
            log,
            logging.INFO,
            "RUL model in use",
            machine=machine,
            model_id=model_id,
            version=tracker.version,
            step_s=tracker.step_s,
        )

    def _remember(self, machine: str, path: Path, model_id: int) -> None:
        folder = self._root / machine
        tmp = folder / (CURRENT + ".tmp")
        doc: dict[str, Any] = {"model_id": model_id, "path": str(path)}
        running = self._running.get(machine)
        if running is not None and running.model_id == model_id:
            # The downgrade floor survives a restart (this file is the edge's own).
            doc["running"] = {
                "model_id": running.model_id,
                "version": running.version,
                "issued_at": running.issued_at.isoformat(),
            }
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, folder / CURRENT)  # atomic: a crash leaves the old or the new
        with self._lock:
            self._remembered[machine] = model_id
        bundles = sorted(
            (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
        )
        for old in bundles[:-KEEP]:
            if old != path:
                shutil.rmtree(old, ignore_errors=True)

    def _refuse(self, machine: str, model_id: int | None, reason: str) -> None:
        self.metrics.model_updates.labels(self._label(machine), "refused").inc()
        with self._lock:
            self._refused_total += 1
            self._refused[machine] = {
                "model_id": model_id,
                "reason": reason,
                "at": _iso(time.time()),
            }
        log_event(
            log,
            logging.ERROR,
            "model bundle refused; keeping the current model",
            machine=machine,
            kind=self.kind,
            model_id=model_id,
            error=reason,
        )

    # -- health -------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """State for ``/healthz``. ``running`` false (the thread is gone) is a fault of the
        edge; ``last_error`` with an old ``last_success_at`` usually means the cloud is out
        of reach, which an edge survives (it keeps the model it has)."""
        now = time.time()
        with self._lock:
            success = self._last_success_at
            return {
                "running": self._thread is not None and self._thread.is_alive(),
                "last_poll_at": _iso(self._last_poll_at),
                "last_success_at": _iso(success),
                "last_success_age_s": None if success is None else round(now - success, 1),
                "consecutive_failures": self._failures,
                "last_error": self._last_error,
                "last_error_at": _iso(self._last_error_at),
                "installed": dict(self.installed),
                "refused": {m: dict(v) for m, v in self._refused.items()},
                "refused_total": self._refused_total,
            }


def _probe(model: OnnxDetector) -> None:
    """Score one reading at the bundle's fill values: a graph that loads but cannot run
    (opset, shapes) fails here, at install time, not in the writer on live data."""
    fill = model.manifest.get("fill_values") or [0.0] * len(model.sensors)
    values: dict[str, float | None] = {
        s: float(v) for s, v in zip(model.sensors, fill, strict=True)
    }
    model.score_batch([Reading(PROBE_MACHINE, "probe", 0, datetime.now(UTC), values)])


def _probe_rul(tracker: RulTracker) -> None:
    """Close two steps of a probe machine at the healthy reference: a graph that loads but
    cannot run fails here, at install time, not on live data."""
    reference = tracker.bundle.manifest.get("reference") or [0.0] * len(tracker.sensors)
    values: dict[str, float | None] = {
        s: float(v) for s, v in zip(tracker.sensors, reference, strict=True)
    }
    step = tracker.step_s
    tracker.observe([(PROBE_MACHINE, 0.0, values), (PROBE_MACHINE, step, values)])
    tracker.reset(PROBE_MACHINE)


def _model_id_of(body: bytes | None) -> int | None:
    if body is None:
        return None
    try:
        value = json.loads(body).get("model_id")
    except (ValueError, AttributeError):
        return None
    return value if type(value) is int else None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
