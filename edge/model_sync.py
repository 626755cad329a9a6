"""Model updates from the cloud: poll, download, verify, hot-swap, and keep for offline use.

For every machine this edge reads, the cloud is asked which model is in service
(``GET /api/v1/edge/models/{machine}``). A new one is downloaded, its Ed25519 signature and
file hashes verified against the cloud's public key, loaded with ONNX Runtime, and only then
swapped in (``CombinedDetector.install``). A bundle that fails any check is refused, counted
and logged; the model in use stays. Installed bundles are kept on disk with a ``current.json``
per machine, so after a restart without network the last verified model runs again
(verified once more before loading).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx

from edge.config import ModelsConfig
from edge.detection import CombinedDetector
from edge.metrics import EdgeMetrics
from edge.onnx_detector import OnnxDetector
from shared.logs import log_event
from shared.model_bundle import BundleError, extract_bundle, load_public_key

log = logging.getLogger(__name__)

CURRENT = "current.json"
# Bundles kept per machine: the one in use and the one before (a cloud rollback then needs no
# download).
KEEP = 2


class ModelSync:
    def __init__(
        self,
        config: ModelsConfig,
        machines: list[str],
        detector: CombinedDetector,
        metrics: EdgeMetrics,
    ) -> None:
        self.config = config
        self.machines = sorted(set(machines))
        self.detector = detector
        self.metrics = metrics
        self.public_key = load_public_key(config.public_key_file.read_bytes())
        self.installed: dict[str, int] = {}
        self.last_error: str | None = None
        verify: bool | str = str(config.ca_file) if config.ca_file else True
        self._client = httpx.Client(
            base_url=config.cloud_url.rstrip("/"),
            timeout=config.timeout_s,
            verify=verify,
            headers={"X-API-KEY": config.api_key()},
        )
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- start-up: what was verified before -------------------------------------------------

    def load_installed(self) -> None:
        """Load each machine's last installed bundle (verified again) so detection works
        from the first reading, with or without the cloud."""
        for machine in self.machines:
            current = self.config.directory / machine / CURRENT
            if not current.is_file():
                continue
            try:
                doc = json.loads(current.read_text())
                self._activate(machine, Path(doc["path"]), int(doc["model_id"]))
            except (OSError, ValueError, KeyError, BundleError) as exc:
                self.metrics.model_updates.labels(machine, "refused").inc()
                log_event(
                    log,
                    logging.ERROR,
                    "installed model not loaded",
                    machine=machine,
                    error=str(exc),
                )

    # -- polling ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.timeout_s + 5)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.config.poll_interval_s)

    def poll_once(self) -> list[str]:
        """Check every machine once; returns the machines whose model changed."""
        changed = []
        for machine in self.machines:
            try:
                if self._check(machine):
                    changed.append(machine)
                self.last_error = None
            except BundleError as exc:
                self.metrics.model_updates.labels(machine, "refused").inc()
                self.last_error = str(exc)
                log_event(
                    log,
                    logging.ERROR,
                    "model bundle refused; keeping the current model",
                    machine=machine,
                    error=str(exc),
                )
            except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
                self.metrics.model_updates.labels(machine, "failed").inc()
                self.last_error = f"{type(exc).__name__}: {exc}"
                log_event(
                    log,
                    logging.WARNING,
                    "model check failed; will retry",
                    machine=machine,
                    error=self.last_error,
                )
        return changed

    def _check(self, machine: str) -> bool:
        response = self._client.get(f"/api/v1/edge/models/{machine}")
        if response.status_code == 404:
            return False  # no model in service for this machine (yet)
        response.raise_for_status()
        info: dict[str, Any] = response.json()
        model_id = int(info["model_id"])
        if self.installed.get(machine) == model_id:
            return False
        target = self.config.directory / machine / f"{model_id}-{info['bundle_sha256'][:12]}"
        if not target.is_dir():
            self._download(info["bundle_url"], target)
        self._activate(machine, target, model_id)
        self._remember(machine, target, model_id)
        return True

    def _download(self, url: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
            archive = Path(tmp) / "bundle.tar.gz"
            with self._client.stream("GET", url) as response:
                response.raise_for_status()
                with archive.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
            staged = Path(tmp) / "bundle"
            # Verifies signature and hashes before a single file is written out.
            extract_bundle(archive, staged, self.public_key)
            os.replace(staged, target)

    def _activate(self, machine: str, path: Path, model_id: int) -> None:
        model = OnnxDetector(path, self.public_key, strategy=self.config.strategy)
        self.detector.install(machine, model, model.version)
        self.installed[machine] = model_id
        self.metrics.model_updates.labels(machine, "installed").inc()
        self.metrics.model_version.labels(machine).set(model_id)
        log_event(
            log,
            logging.INFO,
            "model in use",
            machine=machine,
            model_id=model_id,
            version=model.version,
            strategy=model.strategy,
        )

    def _remember(self, machine: str, path: Path, model_id: int) -> None:
        folder = self.config.directory / machine
        tmp = folder / (CURRENT + ".tmp")
        tmp.write_text(json.dumps({"model_id": model_id, "path": str(path)}))
        os.replace(tmp, folder / CURRENT)  # atomic: a crash leaves the old or the new
        bundles = sorted(
            (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
        )
        for old in bundles[:-KEEP]:
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
