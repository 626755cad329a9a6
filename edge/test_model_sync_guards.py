"""Model sync against a hostile or broken cloud: a real HTTP server (http.server in a thread)
answers with malformed hashes, foreign URLs, oversized and bomb downloads, bundles that do
not load; every one is a refused bundle (logged, counted, shown in ``health()``) that never
becomes a path or a request, and the model in use stays. Start-up with bad installed bundles
never raises, and the sync thread outlives any failing poll."""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.config import ModelsConfig
from edge.detection import CombinedDetector
from edge.metrics import EdgeMetrics
from edge.model_sync import CURRENT, MAX_INFO_BYTES, TEMP_PREFIX, ModelSync
from shared.model_bundle import (
    DEFAULT_LIMITS,
    generate_keypair,
    pack_bundle,
    sign_bundle,
    write_manifest,
)
from tests.support.processes import wait_until

MiB = 1 << 20
INFO_PATH = "/api/v1/edge/models/A"
KEY = "edge-key-0123456789abcdef0123456789"
# A download limit small enough that the over-limit tests move little data.
SMALL_LIMIT = 256 << 10


# -- a real HTTP server standing in for the cloud ---------------------------------------------


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    endless: bool = False  # stream zeros without Content-Length until the client hangs up


class Cloud:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.streaming = threading.Event()
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                cloud.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                route = cloud.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                self.send_response(route.status)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                if not route.endless and "Content-Length" not in route.headers:
                    self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                try:
                    if route.endless:
                        cloud.streaming.set()
                        block = bytes(MiB)
                        for _ in range(4096):  # 4 GiB: far past any limit, but finite
                            self.wfile.write(block)
                    else:
                        self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the edge hung up, as it should past its limit

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def offer(self, info: dict[str, Any], bundle: bytes | None = None, **route: Any) -> None:
        """Answer the model-info request with ``info`` and serve ``bundle`` at its URL."""
        self.routes[INFO_PATH] = Route(body=json.dumps(info).encode())
        url = info.get("bundle_url")
        if bundle is not None and isinstance(url, str):
            self.routes[url] = Route(body=bundle, **route)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cloud() -> Iterator[Cloud]:
    server = Cloud()
    yield server
    server.close()


@pytest.fixture
def elsewhere() -> Iterator[Cloud]:
    """Another host: the edge's key must never reach it."""
    server = Cloud()
    server.routes["/api/v1/edge/models/A/bundle/1"] = Route(body=b"x")
    yield server
    server.close()


# -- keys, bundles, the sync under test -------------------------------------------------------


@dataclass
class Keys:
    private: bytes
    public: bytes


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(*generate_keypair())


def _pack(directory: Path) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return pack_bundle(directory, Path(tmp) / "b.tar.gz").read_bytes()


def _dummy_bundle(private: bytes, content: bytes = b"not a model") -> bytes:
    """Signed and well-formed as an archive, but not a model ONNX Runtime can load."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "b"
        directory.mkdir()
        (directory / "pca.onnx").write_bytes(content)
        write_manifest(directory, {"version": "dummy"})
        sign_bundle(directory, private)
        return _pack(directory)


@dataclass
class Models:
    v1: bytes
    v2: bytes
    broken: bytes  # v1's manifest and signature scheme, with a model file ONNX Runtime rejects
    v1_dir: Path
    broken_dir: Path


@pytest.fixture(scope="module")
def models(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Models:
    """Real signed bundles (isolation forest + PCA: no TensorFlow) on simulator signals."""
    pytest.importorskip("sklearn")
    from models.ensemble import EnsembleConfig, HybridDetector
    from models.export import export_bundle
    from shared.catalog import CORE_SENSOR_NAMES
    from simulator.signals import MachineSignals

    root = tmp_path_factory.mktemp("bundles")
    built: dict[str, Path] = {}
    for seed, version in ((1, "v1"), (2, "v2")):
        signals = MachineSignals("A", seed)
        X = np.array([signals.step(float(i)) for i in range(600)])
        detector = HybridDetector(EnsembleConfig(components=("isolation_forest", "pca")))
        detector.fit(X, sensors=list(CORE_SENSOR_NAMES))
        built[version] = root / version
        export_bundle(detector, built[version], version=version, private_key=keys.private)
    broken = root / "broken"
    broken.mkdir()
    manifest = json.loads((built["v1"] / "manifest.json").read_text())
    for name in manifest["files"]:
        (broken / name).write_bytes((built["v1"] / name).read_bytes())
    (broken / "isolation_forest.onnx").write_bytes(b"\x08\x07 this is no ONNX graph")
    write_manifest(broken, {k: v for k, v in manifest.items() if k != "files"} | {"version": "b"})
    sign_bundle(broken, keys.private)
    return Models(_pack(built["v1"]), _pack(built["v2"]), _pack(broken), built["v1"], broken)


@dataclass
class Edge:
    sync: ModelSync
    metrics: EdgeMetrics
    detector: CombinedDetector
    directory: Path

    def counted(self, result: str, machine: str = "A") -> float:
        value = self.metrics.registry.get_sample_value(
            "rig_edge_model_updates_total", {"machine": machine, "result": result}
        )
        return value or 0.0

    def reason(self, machine: str = "A") -> str:
        return str(self.sync.health()["refused"][machine]["reason"])


@pytest.fixture
def make_edge(tmp_path: Path, keys: Keys) -> Iterator[Callable[..., Edge]]:
    (tmp_path / "signing.pub").write_bytes(keys.public)
    (tmp_path / "api-key").write_text(KEY)
    made: list[ModelSync] = []

    def make(url: str, machines: tuple[str, ...] = ("A",), limit: int | None = None) -> Edge:
        config = ModelsConfig(
            cloud_url=url,
            api_key_file=tmp_path / "api-key",
            public_key_file=tmp_path / "signing.pub",
            directory=tmp_path / "models",
            poll_interval_s=1.0,
            timeout_s=5.0,
        )
        metrics, detector = EdgeMetrics(), CombinedDetector()
        sync = ModelSync(config, list(machines), detector, metrics, max_bundle_bytes=limit)
        made.append(sync)
        return Edge(sync, metrics, detector, config.directory)

    yield make
    for sync in made:
        sync.stop()


def _info(model_id: Any, bundle: bytes | None = None, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "model_id": model_id,
        "machine_id": "A",
        "version": "x",
        "strategy": "hybrid_smart",
        "bundle_sha256": hashlib.sha256(bundle or b"").hexdigest(),
        "bundle_url": f"/api/v1/edge/models/A/bundle/{model_id}",
    }
    return doc | fields


def _files_under(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*")) if directory.exists() else []


def _assert_refused_once(edge: Edge, field_name: str) -> None:
    assert edge.counted("refused") == 1
    assert edge.counted("installed") == 0
    assert edge.reason().startswith(field_name), edge.reason()
    assert edge.detector.versions() == {}


# -- malformed answers: never a path, never a request ------------------------------------------


@pytest.mark.parametrize(
    "sha",
    [
        "/../../../..",
        "../../../../../../tmp/rig-alpha-escape" + "0" * 26,
        "ABCDEF0123456789" * 4,  # uppercase
        "a" * 63,
        "a" * 65,
        "g" * 64,
        "a" * 64 + "\n",
        12345,
        None,
    ],
)
def test_malformed_bundle_sha256_is_refused_before_any_path_or_download(
    cloud: Cloud, make_edge: Callable[..., Edge], keys: Keys, sha: Any
) -> None:
    bundle = _dummy_bundle(keys.private)
    cloud.offer(_info(7, bundle, bundle_sha256=sha), bundle)
    edge = make_edge(cloud.url)
    assert edge.sync.poll_once() == []
    _assert_refused_once(edge, "bundle_sha256")
    assert cloud.paths() == [INFO_PATH]  # the bundle itself was never asked for
    assert _files_under(edge.directory) == []
    assert not Path("/tmp/rig-alpha-escape").exists()


@pytest.mark.parametrize(
    "url",
    [
        "{elsewhere}/api/v1/edge/models/A/bundle/1",
        "//{host}/api/v1/edge/models/A/bundle/1",
        "/api/v1/edge/models/../../../../api/v1/edge/models/A/bundle/1",
        "/api/v1/edge/models/A/./bundle/1",
        "/api/v1/edge/models/A/%2e%2e/%2e%2e/bundle/1",
        "/api/v1/edge/models/A\\..\\..\\bundle\\1",
        "/api/v1/other/A/bundle/1",
        "api/v1/edge/models/A/bundle/1",
        "/api/v1/edge/models/",
        "/api/v1/edge/models/A//bundle/1",
        "/api/v1/edge/models/A/bundle/1?next={elsewhere}",
        "/api/v1/edge/models/A/bundle/1#x",
        "/api/v1/edge/models/A/bundle/1\n",
        "/api/v1/edge/models/A/bundle/1 HTTP/1.1",
        42,
    ],
)
def test_bundle_url_that_is_not_a_relative_models_path_is_refused_and_never_requested(
    cloud: Cloud, elsewhere: Cloud, make_edge: Callable[..., Edge], keys: Keys, url: Any
) -> None:
    if isinstance(url, str):
        url = url.format(elsewhere=elsewhere.url, host=elsewhere.url.removeprefix("http://"))
    bundle = _dummy_bundle(keys.private)
    cloud.offer(_info(1, bundle, bundle_url=url), bundle)
    edge = make_edge(cloud.url)
    edge.sync.poll_once()
    _assert_refused_once(edge, "bundle_url")
    assert elsewhere.requests == []  # the key went nowhere else
    assert cloud.paths() == [INFO_PATH]
    assert _files_under(edge.directory) == []


@pytest.mark.parametrize("model_id", ["1", True, 0, -1, 2**63, 1.5, None])
def test_malformed_model_id_is_refused(
    cloud: Cloud, make_edge: Callable[..., Edge], keys: Keys, model_id: Any
) -> None:
    bundle = _dummy_bundle(keys.private)
    cloud.offer(_info(model_id, bundle, bundle_url="/api/v1/edge/models/A/bundle/1"), bundle)
    edge = make_edge(cloud.url)
    edge.sync.poll_once()
    _assert_refused_once(edge, "model_id")
    assert cloud.paths() == [INFO_PATH]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "model info is not JSON"),
        (b'{"model_id": 1', "model info is not JSON"),
        (b"[1, 2]", "model info is a list"),
        (b'"x"', "model info is a str"),
        (b" " * (MAX_INFO_BYTES + 1), "model info is larger than"),
    ],
)
def test_model_info_that_is_not_a_small_json_object_is_refused(
    cloud: Cloud, make_edge: Callable[..., Edge], body: bytes, reason: str
) -> None:
    cloud.routes[INFO_PATH] = Route(body=body)
    edge = make_edge(cloud.url)
    edge.sync.poll_once()
    _assert_refused_once(edge, reason)


# -- downloads: bounded, hashed, verified, left nowhere when refused ---------------------------


def test_download_declared_over_the_limit_is_refused_on_its_header(
    cloud: Cloud, make_edge: Callable[..., Edge]
) -> None:
    bundle = bytes(4 * SMALL_LIMIT)
    cloud.offer(_info(1, bundle), bundle)
    edge = make_edge(cloud.url, limit=SMALL_LIMIT)
    edge.sync.poll_once()
    _assert_refused_once(edge, "bundle_url: bundle of")
    assert f"{SMALL_LIMIT}-byte limit" in edge.reason()
    assert _files_under(edge.directory) == [edge.directory / "A"]  # no temporary file left


def test_streamed_download_without_length_is_cut_at_the_limit(
    cloud: Cloud, make_edge: Callable[..., Edge]
) -> None:
    info = _info(1, b"whatever")
    cloud.offer(info, b"", endless=True)
    edge = make_edge(cloud.url, limit=SMALL_LIMIT)
    edge.sync.poll_once()
    _assert_refused_once(edge, "bundle_url: download passed the")
    assert _files_under(edge.directory) == [edge.directory / "A"]


def test_default_download_limit_applies_without_configuration(
    cloud: Cloud, make_edge: Callable[..., Edge]
) -> None:
    cloud.offer(_info(1, b"whatever"), b"", endless=True)
    edge = make_edge(cloud.url)
    edge.sync.poll_once()
    _assert_refused_once(edge, "bundle_url: download passed the 67108864-byte limit")


def test_transfer_encoding_gzip_is_refused(cloud: Cloud, make_edge: Callable[..., Edge]) -> None:
    """httpx would expand it in memory before the limit could count the bytes."""
    payload = gzip.compress(bytes(8 * MiB))
    cloud.offer(_info(1, payload), payload, headers={"Content-Encoding": "gzip"})
    edge = make_edge(cloud.url)
    edge.sync.poll_once()
    _assert_refused_once(edge, "bundle_url: answered with content-encoding 'gzip'")
    bundle_request = dict(cloud.requests)["/api/v1/edge/models/A/bundle/1"]
    assert bundle_request["accept-encoding"] == "identity"


def test_download_that_does_not_match_bundle_sha256_is_refused(
    cloud: Cloud, make_edge: Callable[..., Edge], keys: Keys
) -> None:
    bundle = _dummy_bundle(keys.private)
    cloud.offer(_info(1, bundle, bundle_sha256="0" * 64), bundle)
    edge = make_edge(cloud.url)
    edge.sync.poll_once()
    _assert_refused_once(edge, "bundle_sha256: the downloaded bundle hashes to")
    assert _files_under(edge.directory) == [edge.directory / "A"]


def test_gzip_bomb_bundle_is_refused_without_expanding_it(
    cloud: Cloud, make_edge: Callable[..., Edge], tmp_path: Path
) -> None:
    """A tar.gz of about 1 MB whose member expands to 256 MiB: under the download limit,
    refused on the member's declared size before a byte of it is read."""
    size = 4 * DEFAULT_LIMITS.member_bytes
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as gz:
        info = tarfile.TarInfo("isolation_forest.onnx")
        info.size = size
        gz.write(info.tobuf(format=tarfile.PAX_FORMAT))
        for _ in range(size // MiB):
            gz.write(bytes(MiB))
        gz.write(bytes(2 * tarfile.BLOCKSIZE))
    data = bomb.read_bytes()
    assert len(data) < 2 * MiB
    cloud.offer(_info(1, data), data)
    edge = make_edge(cloud.url)
    edge.sync.poll_once()
    assert edge.counted("refused") == 1
    assert "'isolation_forest.onnx' declares 268435456 bytes" in edge.reason()
    assert edge.detector.versions() == {}
    assert _files_under(edge.directory) == [edge.directory / "A"]


def test_bundle_signed_by_another_key_is_refused(
    cloud: Cloud, make_edge: Callable[..., Edge]
) -> None:
    foreign_private, _ = generate_keypair()
    bundle = _dummy_bundle(foreign_private)
    cloud.offer(_info(1, bundle), bundle)
    edge = make_edge(cloud.url)
    edge.sync.poll_once()
    assert edge.counted("refused") == 1
    assert "signed by key" in edge.reason()
    assert _files_under(edge.directory) == [edge.directory / "A"]


def test_a_refused_answer_is_not_downloaded_again_until_it_changes(
    cloud: Cloud, make_edge: Callable[..., Edge], keys: Keys
) -> None:
    foreign_private, _ = generate_keypair()
    bundle = _dummy_bundle(foreign_private)
    cloud.offer(_info(1, bundle), bundle)
    edge = make_edge(cloud.url)
    for _ in range(3):
        edge.sync.poll_once()
    assert cloud.paths().count("/api/v1/edge/models/A/bundle/1") == 1
    assert edge.counted("refused") == 1
    other = _dummy_bundle(foreign_private, b"another")
    cloud.offer(_info(2, other), other)
    edge.sync.poll_once()
    assert cloud.paths().count("/api/v1/edge/models/A/bundle/2") == 1
    assert edge.counted("refused") == 2
    assert edge.sync.health()["refused"]["A"]["model_id"] == 2


# -- loading: any error refuses the bundle, the model in use stays -----------------------------


def test_bundle_onnx_runtime_cannot_load_is_refused_and_the_previous_model_stays(
    cloud: Cloud, make_edge: Callable[..., Edge], models: Models
) -> None:
    cloud.offer(_info(1, models.v1), models.v1)
    edge = make_edge(cloud.url)
    assert edge.sync.poll_once() == ["A"]
    assert edge.detector.versions() == {"A": "v1"}
    v1_dir = json.loads((edge.directory / "A" / CURRENT).read_text())["path"]

    cloud.offer(_info(2, models.broken), models.broken)
    assert edge.sync.poll_once() == []
    assert edge.detector.versions() == {"A": "v1"}  # still scoring with v1
    assert edge.sync.health()["installed"] == {"A": 1}
    assert edge.counted("refused") == 1
    assert "model 2 does not load" in edge.reason()
    # The refused bundle is gone from disk; current.json still names v1.
    assert json.loads((edge.directory / "A" / CURRENT).read_text())["path"] == v1_dir
    assert [p.name for p in (edge.directory / "A").iterdir() if p.is_dir()] == [Path(v1_dir).name]

    cloud.offer(_info(3, models.v2), models.v2)
    assert edge.sync.poll_once() == ["A"]
    assert edge.detector.versions() == {"A": "v2"}
    assert "A" not in edge.sync.health()["refused"]
    assert not [p for p in (edge.directory / "A").iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_load_installed_skips_and_reports_bad_bundles_and_never_raises(
    tmp_path: Path, make_edge: Callable[..., Edge], models: Models
) -> None:
    root = tmp_path / "models"

    def install(machine: str, source: Path | None, current: str | None = None) -> Path:
        folder = root / machine
        folder.mkdir(parents=True)
        target = folder / "1-0123456789ab"
        if source is not None:
            target.mkdir()
            for path in source.iterdir():
                (target / path.name).write_bytes(path.read_bytes())
        doc = {"model_id": 1, "path": str(target)}
        (folder / CURRENT).write_text(current if current is not None else json.dumps(doc))
        return target

    install("good", models.v1_dir)
    install("ort", models.broken_dir)  # signed, but ONNX Runtime rejects the graph
    tampered = install("tampered", models.v1_dir)
    (tampered / "pca.onnx").write_bytes(b"changed after installation")
    install("garbage", None, current="{not json")
    install("outside", None, current=json.dumps({"model_id": 1, "path": str(models.v1_dir)}))
    install("missing", None)
    stale = root / "good" / f"{TEMP_PREFIX}killed"
    stale.mkdir()
    (stale / "bundle.tar.gz").write_bytes(b"partial")

    machines = ("good", "ort", "tampered", "garbage", "outside", "missing", "new")
    edge = make_edge("http://127.0.0.1:9", machines=machines)
    edge.sync.load_installed()  # must not raise

    assert edge.detector.versions() == {"good": "v1"}
    refused = edge.sync.health()["refused"]
    assert sorted(refused) == ["garbage", "missing", "ort", "outside", "tampered"]
    assert "does not load" in refused["ort"]["reason"]
    assert "pca.onnx" in refused["tampered"]["reason"]
    assert "JSONDecodeError" in refused["garbage"]["reason"]
    assert "is outside" in refused["outside"]["reason"]
    for machine in refused:
        assert edge.counted("refused", machine) == 1
    assert not stale.exists()


# -- the sync thread: survives every poll, reports its health ---------------------------------


class _FailingFirstPolls(ModelSync):
    """Fault injection into our own code: the first polls raise what no handler expects."""

    failures_left = 2

    def poll_once(self) -> list[str]:
        if self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("injected poll failure")
        return super().poll_once()


def test_sync_thread_survives_failing_polls_backs_off_and_reports_health(
    cloud: Cloud, make_edge: Callable[..., Edge]
) -> None:
    cloud.routes[INFO_PATH] = Route(status=500, body=b"boom")
    edge = make_edge(cloud.url)
    edge.sync.start()
    wait_until(
        lambda: edge.sync.health()["consecutive_failures"] >= 2,
        30,
        "two failed polls",
    )
    health = edge.sync.health()
    assert health["running"] is True
    assert health["last_success_at"] is None
    assert "500" in health["last_error"] and health["last_error_at"] is not None
    assert edge.counted("failed") >= 2
    assert edge.sync._next_delay() >= 2 * edge.sync.config.poll_interval_s  # backing off

    del cloud.routes[INFO_PATH]  # 404: the cloud answers, no model in service
    wait_until(
        lambda: edge.sync.health()["consecutive_failures"] == 0,
        30,
        "a successful poll after the failures",
    )
    health = edge.sync.health()
    assert health["running"] is True
    assert health["last_success_at"] is not None and health["last_success_age_s"] >= 0
    edge.sync.stop()
    assert edge.sync.health()["running"] is False


def test_sync_thread_outlives_an_unexpected_exception(
    cloud: Cloud, tmp_path: Path, keys: Keys
) -> None:
    (tmp_path / "signing.pub").write_bytes(keys.public)
    (tmp_path / "api-key").write_text(KEY)
    config = ModelsConfig(
        cloud_url=cloud.url,
        api_key_file=tmp_path / "api-key",
        public_key_file=tmp_path / "signing.pub",
        directory=tmp_path / "models",
        poll_interval_s=1.0,
    )
    sync = _FailingFirstPolls(config, ["A"], CombinedDetector(), EdgeMetrics())
    sync.start()
    try:
        wait_until(
            lambda: sync.health()["last_success_at"] is not None, 30, "a poll after the errors"
        )
        health = sync.health()
        assert health["running"] is True
        assert health["consecutive_failures"] == 0
        assert health["last_error"] == "poll failed: RuntimeError: injected poll failure"
    finally:
        sync.stop()


def test_stop_abandons_a_download_in_progress(cloud: Cloud, make_edge: Callable[..., Edge]) -> None:
    cloud.offer(_info(1, b"whatever"), b"", endless=True)
    edge = make_edge(cloud.url, limit=1 << 40)
    edge.sync.start()
    wait_until(cloud.streaming.is_set, 30, "the download to start")
    edge.sync.stop()
    assert edge.sync.health()["running"] is False
    assert edge.counted("refused") == 0  # stopping is not the bundle's fault
    wait_until(
        lambda: _files_under(edge.directory) == [edge.directory / "A"],
        30,
        "the temporary download removed",
    )


def test_health_shape(cloud: Cloud, make_edge: Callable[..., Edge]) -> None:
    edge = make_edge(cloud.url)
    assert edge.sync.health() == {
        "running": False,
        "last_poll_at": None,
        "last_success_at": None,
        "last_success_age_s": None,
        "consecutive_failures": 0,
        "last_error": None,
        "last_error_at": None,
        "installed": {},
        "refused": {},
        "refused_total": 0,
    }
    edge.sync.poll_once()  # 404: nothing in service
    health = edge.sync.health()
    assert health["last_success_at"] == health["last_poll_at"] is not None
    json.dumps(health)  # served as JSON by /healthz
