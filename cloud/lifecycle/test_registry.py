"""The registry and the training queue on a real PostgreSQL (no model training here): one
model in service per machine, rollback, the job queue taken once, the schedule's back-off."""

from __future__ import annotations

import psycopg
import pytest

from cloud.cli_models import _schedule
from cloud.fielderror import FieldError, NotFoundError
from cloud.lifecycle import registry

pytestmark = pytest.mark.integration


def _register(conn: psycopg.Connection, machine: str, accepted: bool) -> dict:
    return registry.register(
        conn,
        registry.Candidate(
            machine,
            "hybrid_smart",
            {"f1": 0.9},
            {"version": "x"},
            b"bundle",
            None,
            None,
            1000,
            "test",
        ),
        accepted=accepted,
        reason="test",
        baseline_metrics=None,
    )


def test_one_model_in_service_and_rollback(database_url: str) -> None:
    with (
        psycopg.connect(database_url) as conn,
        conn.transaction(),
        pytest.raises(NotFoundError),
    ):
        registry.rollback(conn, "A", "op")
    with psycopg.connect(database_url) as conn:
        with conn.transaction():
            first = _register(conn, "A", accepted=True)
            refused = _register(conn, "A", accepted=False)
            second = _register(conn, "A", accepted=True)
        assert (first["version"], refused["version"], second["version"]) == (1, 2, 3)
        assert registry.active(conn, "A")["version"] == 3
        with conn.transaction():
            back = registry.rollback(conn, "A", "op")
        assert back["version"] == 1
        statuses = {m["version"]: m["status"] for m in registry.list_models(conn, "A", None)}
        assert statuses == {1: "active", 2: "rejected", 3: "retired"}
        # Nothing older than version 1 was ever in service.
        with pytest.raises(FieldError, match="no earlier model"), conn.transaction():
            registry.rollback(conn, "A", "op")
        assert registry.list_models(conn, None, ("B",)) == []


def test_jobs_are_claimed_once_and_the_schedule_backs_off(database_url: str) -> None:
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute("INSERT INTO machines (machine_id) VALUES ('A'), ('B')")
        _register(conn, "A", accepted=True)
    # A has a fresh model; B has none and is queued, once.
    assert _schedule(database_url, interval_h=1.0) == 1
    assert _schedule(database_url, interval_h=1.0) == 0
    with psycopg.connect(database_url) as conn, conn.transaction():
        claimed = registry.claim_job(conn)
        assert claimed is not None and claimed[1] == "B"
        assert registry.claim_job(conn) is None
        registry.finish_job(conn, claimed[0], None, "ValueError: too few readings")
        job = registry.job(conn, claimed[0])
    assert job is not None and (job["status"], job["error"]) == (
        "failed",
        "ValueError: too few readings",
    )
    # Failed within the interval: not queued again until the interval has passed.
    assert _schedule(database_url, interval_h=1.0) == 0
