"""Model statements end to end (issue #15 item 5), against the real cloud API on PostgreSQL,
with the cheap hand-built RUL bundle (the detector's sync runs the same checks): an edge that
requires statements installs models the registry approved, follows a key rotation and a
signed rollback, and refuses a downgrade, a statement for another machine, an expired one and
an unsigned rollback, keeping the model in use; its downgrade floor survives a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from cloud.lifecycle import registry
from edge.config import ModelsConfig
from edge.detection import CombinedDetector
from edge.metrics import EdgeMetrics
from edge.model_sync import ModelSync
from shared.model_bundle import generate_keypair, pack_bundle
from shared.model_statement import Statement, sign_statement
from tests.support.processes import Service, free_port, http_ok, wait_until
from tests.support.rul_bundle import write_test_rul_bundle

pytest.importorskip("onnx")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
KEY = "k" * 32


def _publish(database_url: str, tmp: Path, version: str, private: bytes, machine: str = "A") -> int:
    folder = tmp / f"{machine}-{version}"
    write_test_rul_bundle(folder, private_key=private, version=version)
    archive = pack_bundle(folder, tmp / f"{machine}-{version}.tar.gz").read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    with psycopg.connect(database_url) as conn, conn.transaction():
        row = registry.register(
            conn,
            registry.Candidate(machine, "rul", {}, manifest, archive, None, None, 0, "t", "rul"),
            accepted=True,
            reason="test",
            baseline_metrics=None,
            signing_key=private,
        )
    return int(row["id"])


def _serve(database_url: str, model_id: int, statement: Any) -> None:
    """What an attacker with write access to the registry does: put a model in service with
    the statement of their choice."""
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute(
            "UPDATE model_registry SET status = 'retired' WHERE machine_id = 'A' "
            "AND kind = 'rul' AND status = 'active'"
        )
        conn.execute(
            "UPDATE model_registry SET status = 'active', statement = %s WHERE id = %s",
            (Jsonb(statement), model_id),
        )


def _statement_of(database_url: str, model_id: int) -> Any:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT statement FROM model_registry WHERE id = %s", (model_id,))
        found = row.fetchone()
    assert found is not None
    return found[0]


@pytest.fixture
def cloud(database_url: str, tmp_path: Path) -> Iterator[tuple[str, Service]]:
    port = free_port()
    env = {"DATABASE_URL": database_url, "RIG_INGEST_API_KEY": KEY}
    service = Service("cloud", ["cloud.cli", "serve", "--port", str(port)], tmp_path, env).start()
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{base}/readyz"), 60, "cloud API", services=[service])
    yield base, service
    service.stop()


def test_statements_rotation_rollback_and_every_refusal(
    cloud: tuple[str, Service], database_url: str, tmp_path: Path
) -> None:
    base, service = cloud
    old_private, old_public = generate_keypair()
    new_private, new_public = generate_keypair()
    (tmp_path / "old.pub").write_bytes(old_public)
    (tmp_path / "new.pub").write_bytes(new_public)
    (tmp_path / "api-key").write_text(KEY)
    config = ModelsConfig(
        cloud_url=base,
        api_key_file=tmp_path / "api-key",
        public_key_file=tmp_path / "old.pub",  # the single-key setting, beside the list
        public_key_files=[tmp_path / "new.pub"],
        require_statement=True,
        directory=tmp_path / "models",
        poll_interval_s=1.0,
        timeout_s=5.0,
    )

    def edge() -> tuple[ModelSync, CombinedDetector]:
        detector = CombinedDetector()
        return ModelSync(config, ["A"], detector, EdgeMetrics(), kind="rul"), detector

    def refused(sync: ModelSync, field: str) -> None:
        assert sync.poll_once() == []
        reason = sync.health()["refused"]["A"]["reason"]
        assert reason.startswith(f"{field}: "), reason

    sync, detector = edge()
    v1 = _publish(database_url, tmp_path, "v1", old_private)
    assert sync.poll_once() == ["A"] and detector.rul_versions() == {"A": "v1"}
    v1_statement = _statement_of(database_url, v1)

    # Rotation: bundle and statement signed by the new key; the edge trusts both.
    v2 = _publish(database_url, tmp_path, "v2", new_private)
    assert sync.poll_once() == ["A"] and detector.rul_versions() == {"A": "v2"}

    # A downgrade: v1 back in service with its own (genuine, unexpired) deploy statement.
    _serve(database_url, v1, v1_statement)
    refused(sync, "version")

    # Another machine's genuine statement for the same bundle hash.
    b1 = _publish(database_url, tmp_path, "v1", new_private, machine="B")
    forged = dict(_statement_of(database_url, b1))
    _serve(database_url, v1, forged)
    refused(sync, "machine_id")

    # An expired statement.
    now = datetime.now(UTC)
    v3 = _publish(database_url, tmp_path, "v3", new_private)
    with psycopg.connect(database_url) as conn:
        sha = conn.execute("SELECT bundle_sha256 FROM model_registry WHERE id = %s", (v3,))
        row = sha.fetchone()
    assert row is not None
    expired = Statement("A", "rul", v3, 3, row[0], now - timedelta(days=2), now - timedelta(1))
    _serve(database_url, v3, sign_statement(expired, new_private))
    refused(sync, "expires_at")
    assert detector.rul_versions() == {"A": "v2"}  # every refusal kept the model in use

    # v3 approved again; then a rollback without the signing key: no statement, refused.
    _serve(
        database_url,
        v3,
        sign_statement(
            Statement("A", "rul", v3, 3, row[0], now, now + timedelta(days=1)), new_private
        ),
    )
    assert sync.poll_once() == ["A"] and detector.rul_versions() == {"A": "v3"}
    with psycopg.connect(database_url) as conn, conn.transaction():
        assert registry.rollback(conn, "A", "admin", "rul")["id"] == v2
    refused(sync, "statement")

    # The same rollback signed (rig-cloud model rollback with the key): followed.
    _serve(
        database_url,
        v3,
        sign_statement(
            Statement("A", "rul", v3, 3, row[0], now, now + timedelta(days=1)), new_private
        ),
    )
    assert sync.poll_once() == []  # v3 is what it runs
    with psycopg.connect(database_url) as conn, conn.transaction():
        back = registry.rollback(conn, "A", "admin", "rul", signing_key=new_private)
    assert back["id"] == v2
    assert sync.poll_once() == ["A"] and detector.rul_versions() == {"A": "v2"}
    sync.stop()

    # Restart without the cloud: v2 runs from disk and its floor (version 2) still holds.
    service.stop()
    restarted, detector = edge()
    restarted.load_installed()
    assert detector.rul_versions() == {"A": "v2"}
    floor = json.loads((tmp_path / "models" / ".rul" / "A" / "current.json").read_text())
    assert floor["running"]["version"] == 2 and floor["running"]["model_id"] == v2
    restarted.stop()
