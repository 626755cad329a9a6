"""The audit trail through the API (one app, one database): logins and changes are recorded
with who, from where, before and after; admins filter the list, export CSV and PDF (the export
recorded too) and verify the chains; others are refused."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.audit import settings as audit_settings
from cloud.settings import CloudSettings
from shared.model_bundle import generate_keypair
from tests.support.accounts import add_user, bearer, login

pytestmark = pytest.mark.integration


@pytest.fixture
def client(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    private, _public = generate_keypair()
    (tmp_path / "audit.key").write_bytes(private)
    (tmp_path / "detail.key").write_bytes(bytes(range(32)))
    monkeypatch.setenv("RIG_AUDIT_SIGNING_KEY_FILE", str(tmp_path / "audit.key"))
    monkeypatch.setenv("RIG_AUDIT_DETAIL_KEY_FILE", str(tmp_path / "detail.key"))
    monkeypatch.setenv("RIG_AUDIT_CHECKPOINT_FILE", str(tmp_path / "checkpoints.jsonl"))
    audit_settings.current.cache_clear()
    with TestClient(
        create_app(CloudSettings(database_url=database_url, ingest_api_key="k" * 32))
    ) as test_client:
        yield test_client
    audit_settings.current.cache_clear()


def test_changes_and_logins_are_recorded_filtered_exported_and_verified(
    client: TestClient, database_url: str
) -> None:
    password = add_user(database_url, "ada", "admin")
    add_user(database_url, "bob", "operator")
    viewer_password = add_user(database_url, "vic", "viewer")
    ua = {"User-Agent": "audit-test/1.0"}
    for _ in range(5):  # a burst of failures for bob, and one for a name that is no account
        assert client.post(
            "/api/v1/auth/login", json={"username": "bob", "password": "wrong-wrong"}, headers=ua
        ).status_code in (401, 429)
    client.post("/api/v1/auth/login", json={"username": "nobody", "password": "x"}, headers=ua)
    admin = {**bearer(login(client, "ada", password)), **ua}
    client.cookies.clear()
    put = client.put(
        "/api/v1/machines/A/thresholds/rpm", json={"critical_high": 5000}, headers=admin
    )
    assert put.status_code == 200, put.text
    put = client.put(
        "/api/v1/machines/A/thresholds/rpm", json={"critical_high": 4000}, headers=admin
    )
    assert put.status_code == 200

    page = client.get("/api/v1/audit", params={"action": "threshold."}, headers=admin).json()
    latest = page["events"][0]
    assert (latest["actor"], latest["role"], latest["action"]) == ("ada", "admin", "threshold.set")
    assert latest["resource"] == "threshold:A/rpm" and latest["user_agent"] == "audit-test/1.0"
    assert latest["before"]["high"] == 5000 and latest["after"]["critical_high"] == 4000
    assert latest["ip"]

    logins = client.get(
        "/api/v1/audit", params={"category": "auth", "action": "auth.login"}, headers=admin
    ).json()
    outcomes = [(e["actor"], e["outcome"]) for e in logins["events"]]
    assert ("ada", "ok") in outcomes and outcomes.count(("bob", "failure")) == 5
    unknown = next(e for e in logins["events"] if e["actor"] is None)
    assert unknown["detail"]["attempted_username"]["enc"] == "A256GCM"  # sealed, not in clear
    assert {"kind": "account", "who": "bob", "failures": 5}.items() <= {
        k: v for b in logins["bursts"] if b["kind"] == "account" for k, v in b.items()
    }.items()

    assert (
        client.get("/api/v1/audit", params={"actor": "vic"}, headers=admin).json()["events"] == []
    )
    viewer = bearer(login(client, "vic", viewer_password))
    client.cookies.clear()
    assert client.get("/api/v1/audit", headers=viewer).status_code == 403

    exported = client.get(
        "/api/v1/audit", params={"action": "threshold.", "format": "csv"}, headers=admin
    )
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["action"] for r in rows] == ["threshold.set", "threshold.set"]
    pdf = client.get("/api/v1/audit", params={"format": "pdf"}, headers=admin)
    assert pdf.content.startswith(b"%PDF") and pdf.headers["content-type"] == "application/pdf"
    exports = client.get("/api/v1/audit", params={"category": "export"}, headers=admin).json()
    assert [e["action"] for e in exports["events"]] == ["audit.export_pdf", "audit.export_csv"]

    assert client.post("/api/v1/audit/checkpoint", headers=admin).status_code == 201
    verified = client.get("/api/v1/audit/verify", headers=admin).json()
    assert verified["ok"] and verified["checkpoints_checked"] == 1, verified
