"""Root-cause reports through the API against embedded PostgreSQL: the facts (contributing
sensors, cited readings, similar anomalies of the machine and of the fleet), the offline
writer and the model through a real local OpenAI-compatible server, broken answers falling
back with a note, versions, PDF export, and machine scope."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader

from cloud.api.app import create_app
from cloud.assistant.report_offline import catalog, parse_catalog
from cloud.settings import CloudSettings
from tests.support.accounts import add_user, bearer, login
from tests.support.openai_server import FakeOpenAI

pytestmark = pytest.mark.integration

KEY = "k" * 32
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _detection(shares: dict[str, float], score: float = 0.9) -> dict[str, Any]:
    return {
        "method": "hybrid_smart",
        "is_anomaly": True,
        "score": score,
        "sensors": list(shares),
        "contributions": [{"sensor": s, "share": v} for s, v in shares.items()],
        "model_version": "3",
    }


_SEQ = itertools.count(1)


def _post(client: TestClient, *readings: dict[str, Any]) -> None:
    # A detection is taken as the platform's own only from an edge (edge_id and seq, see
    # cloud/scoring.py): these readings stand for an edge's verdicts.
    sent = [
        {"edge_id": "rig-1", "seq": next(_SEQ), **r} if "detection" in r else r for r in readings
    ]
    response = client.post("/api/v1/ingest", json={"readings": sent}, headers={"X-API-KEY": KEY})
    assert response.status_code == 200, response.text


def _seed(client: TestClient) -> None:
    # Twenty minutes of normal readings on A, vibration creeping up, then the anomaly.
    normal = [
        {
            "machine_id": "A",
            "timestamp": (T0 - timedelta(minutes=20 - i)).isoformat(),
            "vibration": 2.0 + 0.01 * (i % 3),
            "bearing_temp": 140.0 + 0.1 * (i % 2),
            "rpm": 3200.0,
        }
        for i in range(20)
    ]
    _post(client, *normal)
    _post(
        client,
        {
            "machine_id": "A",
            "timestamp": T0.isoformat(),
            "vibration": 9.4,
            "bearing_temp": 171.0,
            "rpm": 3190.0,
            "detection": {
                **_detection({"vibration": 0.7, "bearing_temp": 0.3}, score=1.3),
                "rul": {
                    "rul_hours": 120.0,
                    "low_hours": 90.0,
                    "high_hours": 150.0,
                    "critical_sensors": [{"sensor": "vibration", "share": 0.8}],
                },
            },
        },
        # The past: the same fault on A two days ago and on B yesterday; a voltage anomaly on
        # C that has nothing in common.
        {
            "machine_id": "A",
            "timestamp": (T0 - timedelta(days=2)).isoformat(),
            "vibration": 8.1,
            "bearing_temp": 165.0,
            "detection": _detection({"vibration": 0.6, "bearing_temp": 0.4}),
        },
        {
            "machine_id": "B",
            "timestamp": (T0 - timedelta(days=1)).isoformat(),
            "vibration": 8.8,
            "bearing_temp": 150.0,
            "detection": _detection({"vibration": 0.8, "bearing_temp": 0.2}),
        },
        {
            "machine_id": "C",
            "timestamp": (T0 - timedelta(days=1)).isoformat(),
            "voltage": 160.0,
            "detection": _detection({"voltage": 1.0}),
        },
    )


def _anomaly_ids(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT machine_id, reading_ts, id FROM anomaly_detections ORDER BY id"
        ).fetchall()
    ids = {}
    for machine, ts, row_id in rows:
        key = "now" if machine == "A" and ts == T0 else f"past_{machine}"
        ids[key] = row_id
    return ids


class Env:
    def __init__(self, client: TestClient, database_url: str) -> None:
        self.client = client
        self.ids = _anomaly_ids(database_url)
        self.users = {}
        for name, role, machines in (
            ("op", "operator", None),
            ("viewer_a", "viewer", ["A"]),
            ("viewer_b", "viewer", ["B"]),
        ):
            token = login(client, name, add_user(database_url, name, role, machines))
            self.users[name] = bearer(token)
        client.cookies.clear()

    def post(self, path: str, user: str = "op") -> Any:
        return self.client.post(path, headers=self.users[user])

    def get(self, path: str, user: str = "op") -> Any:
        return self.client.get(path, headers=self.users[user])


def _env(database_url: str, **ai: Any) -> Iterator[Env]:
    settings = CloudSettings(database_url=database_url, ingest_api_key=KEY, **ai)
    with TestClient(create_app(settings)) as client:
        _seed(client)
        yield Env(client, database_url)


@pytest.fixture
def offline(database_url: str) -> Iterator[Env]:
    yield from _env(database_url)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def online(database_url: str, fake: FakeOpenAI) -> Iterator[Env]:
    yield from _env(
        database_url,
        ai_base_url=fake.base_url,
        ai_model_reports="report-model",
        ai_timeout_s=2.0,
        ai_max_retries=0,
    )


def test_offline_report_names_sensors_cites_readings_lists_similar(offline: Env) -> None:
    anomaly = offline.ids["now"]
    # What the operator wrote when resolving the earlier one comes with it.
    resolved = offline.client.post(
        f"/api/v1/anomalies/{offline.ids['past_A']}/resolve",
        json={"note": "regreased the drive-end bearing"},
        headers=offline.users["op"],
    )
    assert resolved.status_code == 200, resolved.text
    response = offline.post(f"/api/generate-report/{anomaly}")
    assert response.status_code == 200, response.text
    stored = response.json()
    assert (stored["path"], stored["model"], stored["note"], stored["version"]) == (
        "offline",
        None,
        None,
        1,
    )
    report = stored["report"]
    sensors = [(s["sensor"], s["share"]) for s in report["contributing_sensors"]]
    assert sensors == [("vibration", 0.7), ("bearing_temp", 0.3)]
    vibration = report["contributing_sensors"][0]
    assert vibration["value"] == 9.4 and vibration["direction"] == "high"
    assert vibration["threshold_state"] == "critical" and vibration["samples"] == 21
    assert vibration["baseline_mean"] == pytest.approx(2.01, abs=0.01)
    assert "vibration" in report["summary"] and "bearing_temp" in report["summary"]
    cited = {(r["sensor"], r["value"], r["what"]) for r in report["readings_cited"]}
    assert ("vibration", 9.4, "value at the anomaly") in cited
    assert ("bearing_temp", 171.0, "value at the anomaly") in cited
    similar = report["similar_anomalies"]
    assert [a["id"] for a in similar["machine"]] == [offline.ids["past_A"]]
    assert [a["id"] for a in similar["fleet"]] == [offline.ids["past_B"]]
    assert similar["machine"][0]["similarity"] > 0.9
    assert similar["machine"][0]["note"] == "regreased the drive-end bearing"
    assert (similar["machine"][0]["state"], similar["machine"][0]["noted_by"]) == ("resolved", "op")
    assert (similar["fleet"][0]["state"], similar["fleet"][0]["note"]) == ("open", None)
    causes = report["likely_causes"]
    assert causes[0]["failure_mode"] == "bearing_wear"
    assert any("vibration carried 70 %" in e for e in causes[0]["evidence"])
    assert report["recommended_actions"][0].startswith("Check bearing lubrication")
    assert report["confidence"]["level"] in {"medium", "high"}
    assert report["model_in_service"] == {"version": "3", "in_registry": False}
    life = report["remaining_life"]
    assert (life["rul_hours"], life["low_hours"], life["high_hours"]) == (120.0, 90.0, 150.0)
    assert "Estimated remaining life 120 h (90–150 h)." in report["summary"]

    # A second generation is version 2; both are kept.
    assert offline.post(f"/api/v1/anomalies/{anomaly}/reports").json()["version"] == 2
    listed = offline.get(f"/api/v1/anomalies/{anomaly}/reports").json()
    assert [v["version"] for v in listed["versions"]] == [2, 1]
    assert listed["report"]["version"] == 2
    first = offline.get(f"/api/v1/anomalies/{anomaly}/reports?version=1").json()["report"]
    assert first["report"] == report


def test_pdf_export(offline: Env) -> None:
    anomaly = offline.ids["now"]
    none_yet = offline.get(f"/api/v1/anomalies/{anomaly}/reports").json()
    assert none_yet == {"anomaly_id": anomaly, "versions": [], "report": None}
    assert offline.get(f"/api/v1/anomalies/{anomaly}/reports?format=pdf").status_code == 404
    offline.post(f"/api/v1/anomalies/{anomaly}/reports")
    response = offline.get(f"/api/v1/anomalies/{anomaly}/reports?format=pdf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert "report-v1.pdf" in response.headers["content-disposition"]
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(response.content)).pages)
    for needle in ("Root-cause report", "vibration", "bearing_temp", "Similar past anomalies"):
        assert needle in text, needle
    assert str(offline.ids["past_B"]) in text and "open" in text
    missing = offline.get(f"/api/v1/anomalies/{anomaly}/reports?version=9&format=pdf")
    assert missing.status_code == 404 and missing.json()["field"] == "version"


def test_reports_follow_machine_scope(offline: Env) -> None:
    anomaly = offline.ids["now"]
    assert offline.post(f"/api/generate-report/{anomaly}", user="viewer_b").status_code == 404
    assert offline.get(f"/api/v1/anomalies/{anomaly}/reports", user="viewer_b").status_code == 404
    # A viewer of A may write one; B's anomaly is not among its fleet neighbours.
    mine = offline.post(f"/api/generate-report/{anomaly}", user="viewer_a").json()
    assert mine["created_by"] == "viewer_a"
    assert mine["report"]["similar_anomalies"]["fleet"] == []
    pdf = offline.get(f"/api/v1/anomalies/{anomaly}/reports?format=pdf", user="viewer_b")
    assert pdf.status_code == 404
    assert offline.post("/api/generate-report/999999").status_code == 404


def _model_report(sensor: str = "vibration", other: str = "bearing_temp") -> dict[str, Any]:
    return {
        "summary": f"{sensor} rose to 9.4 mm/s with {other} at 171 °F: bearing distress.",
        "likely_causes": [
            {
                "cause": "Outer-race bearing defect",
                "likelihood": 0.7,
                "evidence": [f"{sensor} 9.4 mm/s against a baseline of 2.0"],
                "failure_mode": "bearing_wear",
            }
        ],
        "recommended_actions": ["Grease the drive-end bearing", "Take a vibration spectrum"],
        "confidence": {"level": "medium", "score": 0.6, "why": "one similar event"},
    }


def test_model_written_report(online: Env, fake: FakeOpenAI) -> None:
    fake.reply(_model_report())
    anomaly = online.ids["now"]
    stored = online.post(f"/api/v1/anomalies/{anomaly}/reports").json()
    assert (stored["path"], stored["model"], stored["note"]) == (
        "model",
        "local-test-model",
        None,
    )
    report = stored["report"]
    assert report["likely_causes"][0]["cause"] == "Outer-race bearing defect"
    # The factual sections are the facts, whoever wrote the judgement.
    assert [s["sensor"] for s in report["contributing_sensors"]] == ["vibration", "bearing_temp"]
    assert [a["id"] for a in report["similar_anomalies"]["fleet"]] == [online.ids["past_B"]]
    (sent,) = fake.requests
    assert sent["model"] == "report-model" and sent["response_format"]["type"] == "json_object"
    user = sent["messages"][1]["content"]
    assert '"contributing_sensors"' in user and "bearing_wear" in user
    pdf = online.get(f"/api/v1/anomalies/{anomaly}/reports?format=pdf")
    text = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    assert "local-test-model" in text and "Outer-race bearing defect" in text


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def shared_online(module_database_url: str, shared_fake: FakeOpenAI) -> Iterator[Env]:
    """One app for the broken-answer cases: each asks for a new report of the same anomaly
    and checks only the answer it got, so they need not pay for a fresh app each."""
    yield from _env(
        module_database_url,
        ai_base_url=shared_fake.base_url,
        ai_model_reports="report-model",
        ai_timeout_s=2.0,
        ai_max_retries=0,
    )


@pytest.mark.parametrize(
    ("answer", "note"),
    [
        ("The bearing is worn.", "not JSON"),
        ({"summary": "x", "likely_causes": []}, "likely_causes: expected a non-empty list"),
        (
            {**_model_report(), "confidence": {"level": "certain", "score": 2}},
            "confidence.level",
        ),
        (
            {
                **_model_report(sensor="the pump", other="its casing"),
                "recommended_actions": ["Replace the pump"],
            },
            "names none of the contributing sensors",
        ),
    ],
)
def test_broken_model_report_falls_back_with_a_note(
    shared_online: Env, shared_fake: FakeOpenAI, answer: Any, note: str
) -> None:
    online = shared_online
    shared_fake.reply(answer)
    stored = online.post(f"/api/generate-report/{online.ids['now']}").json()
    assert (stored["path"], stored["model"]) == ("offline", None)
    assert note in stored["note"] and "offline writer answered" in stored["note"]
    assert stored["report"]["likely_causes"][0]["failure_mode"] == "bearing_wear"


def test_unreachable_model_falls_back(database_url: str) -> None:
    for env in _env(database_url, ai_base_url="http://127.0.0.1:9/v1", ai_max_retries=0):
        stored = env.post(f"/api/generate-report/{env.ids['now']}").json()
        assert stored["path"] == "offline" and "unreachable" in stored["note"]


def test_failure_mode_catalog_is_valid() -> None:
    modes = catalog()
    assert len(modes) >= 15
    categories = {m.category for m in modes}
    assert categories == {"environmental", "mechanical", "thermal", "electrical", "fluid"}
    with pytest.raises(ValueError, match=r"modes\[0\]\.category"):
        parse_catalog(
            {
                "modes": [
                    {
                        "id": "x",
                        "category": "magic",
                        "cause": "c",
                        "prior": 0.5,
                        "actions": ["a"],
                    }
                ]
            }
        )
