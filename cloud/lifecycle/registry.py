"""The model registry: versions per machine, their metrics, which one is in service.

State changes are single transactions guarded by the partial unique index "one active model
per machine", so two trainers finishing at once cannot both put a model in service.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cloud.fielderror import FieldError, NotFoundError
from shared.model_bundle import PrivateKeyLike
from shared.model_statement import DEFAULT_VALIDITY, Statement, sign_statement

_PUBLIC_COLUMNS = (
    "id, machine_id, version, status, strategy, metrics, baseline_metrics, reason, "
    "trained_from, trained_to, training_rows, manifest, bundle_sha256, created_by, "
    "created_at, activated_at, octet_length(bundle) AS bundle_bytes"
)
# Kinds of model a machine can have in service at once, one of each (migration 0015). The
# public row tells them apart by ``strategy``: a RUL model's is "rul".
KINDS = ("detector", "rul")
# How long a signed statement approves a model (an edge refuses it afterwards; a model in
# service that long is re-approved by retraining or ``rig-cloud model rollback``).
STATEMENT_DAYS_ENV = "RIG_MODEL_STATEMENT_DAYS"


def statement_validity() -> timedelta:
    raw = os.environ.get(STATEMENT_DAYS_ENV)
    if not raw:
        return DEFAULT_VALIDITY
    try:
        days = float(raw)
    except ValueError:
        raise FieldError(STATEMENT_DAYS_ENV, f"{raw!r} is not a number of days") from None
    if not 1 <= days <= 3650:
        raise FieldError(STATEMENT_DAYS_ENV, f"{raw} is not between 1 and 3650 days")
    return timedelta(days=days)


def _sign(
    conn: psycopg.Connection,
    model_id: int,
    signing_key: PrivateKeyLike,
    *,
    purpose: str = "deploy",
    rollback_from: int | None = None,
) -> dict[str, Any]:
    """Sign the statement approving model ``model_id`` for its machine and store it."""
    row = conn.execute(
        "SELECT machine_id, kind, version, bundle_sha256 FROM model_registry WHERE id = %s",
        (model_id,),
    ).fetchone()
    assert row is not None
    now = datetime.now(UTC)
    statement = Statement(
        machine_id=row[0],
        kind=row[1],
        model_id=model_id,
        version=row[2],
        bundle_sha256=row[3],
        issued_at=now,
        expires_at=now + statement_validity(),
        purpose=purpose,
        rollback_from=rollback_from,
    )
    doc = sign_statement(statement, signing_key)
    conn.execute("UPDATE model_registry SET statement = %s WHERE id = %s", (Jsonb(doc), model_id))
    return doc


@dataclass(frozen=True, slots=True)
class Candidate:
    machine_id: str
    strategy: str
    metrics: dict[str, Any]
    manifest: dict[str, Any]
    bundle: bytes
    trained_from: datetime | None
    trained_to: datetime | None
    training_rows: int
    created_by: str | None
    kind: str = "detector"


def _json(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in ("trained_from", "trained_to", "created_at", "activated_at"):
        if out.get(key) is not None:
            out[key] = out[key].isoformat()
    return out


def register(
    conn: psycopg.Connection,
    candidate: Candidate,
    *,
    accepted: bool,
    reason: str,
    baseline_metrics: dict[str, Any] | None,
    signing_key: PrivateKeyLike | None = None,
) -> dict[str, Any]:
    """Record a trained model: accepted ones go into service (the previous active one is
    retired), refused ones are kept as ``rejected`` with the reason, for the audit trail.
    With ``signing_key`` an accepted model gets its signed statement in the same
    transaction; a refused one never has one."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"models:{candidate.machine_id}",))
    next_version = conn.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM model_registry "
        "WHERE machine_id = %s AND kind = %s",
        (candidate.machine_id, candidate.kind),
    ).fetchone()
    # An aggregate always answers one row.
    version = next_version[0] if next_version is not None else 1
    if accepted:
        conn.execute(
            "UPDATE model_registry SET status = 'retired' "
            "WHERE machine_id = %s AND kind = %s AND status = 'active'",
            (candidate.machine_id, candidate.kind),
        )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "INSERT INTO model_registry (machine_id, version, status, strategy, metrics, "
            "baseline_metrics, reason, trained_from, trained_to, training_rows, manifest, "
            "bundle, bundle_sha256, created_by, kind, activated_at) VALUES (%s, %s, %s, %s, %s, "
            "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END) "
            f"RETURNING {_PUBLIC_COLUMNS}",
            (
                candidate.machine_id,
                version,
                "active" if accepted else "rejected",
                candidate.strategy,
                Jsonb(candidate.metrics),
                Jsonb(baseline_metrics) if baseline_metrics is not None else None,
                reason,
                candidate.trained_from,
                candidate.trained_to,
                candidate.training_rows,
                Jsonb(candidate.manifest),
                candidate.bundle,
                hashlib.sha256(candidate.bundle).hexdigest(),
                candidate.created_by,
                candidate.kind,
                accepted,
            ),
        )
        row = cur.fetchone()
    assert row is not None
    if accepted and signing_key is not None:
        _sign(conn, int(row["id"]), signing_key)
    return _json(row)


def active(
    conn: psycopg.Connection, machine_id: str, kind: str = "detector"
) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_PUBLIC_COLUMNS} FROM model_registry "
            "WHERE machine_id = %s AND kind = %s AND status = 'active'",
            (machine_id, kind),
        )
        row = cur.fetchone()
    return _json(row) if row else None


def active_for_edge(
    conn: psycopg.Connection, machine_id: str, kind: str = "detector"
) -> dict[str, Any] | None:
    """The model in service with its signed statement (None: registered without one)."""
    row = active(conn, machine_id, kind)
    if row is None:
        return None
    found = conn.execute(
        "SELECT statement FROM model_registry WHERE id = %s", (row["id"],)
    ).fetchone()
    row["statement"] = found[0] if found else None
    return row


def bundle(conn: psycopg.Connection, model_id: int) -> tuple[str, bytes, str] | None:
    """(machine_id, signed bundle bytes, sha256) of a model."""
    row = conn.execute(
        "SELECT machine_id, bundle, bundle_sha256 FROM model_registry WHERE id = %s",
        (model_id,),
    ).fetchone()
    return (row[0], bytes(row[1]), row[2]) if row else None


def list_models(
    conn: psycopg.Connection, machine_id: str | None, machines: tuple[str, ...] | None
) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_PUBLIC_COLUMNS} FROM model_registry "
            "WHERE (%(machine)s::text IS NULL OR machine_id = %(machine)s) "
            "AND (%(all)s OR machine_id = ANY(%(machines)s)) "
            "ORDER BY machine_id, kind, version DESC",
            {"machine": machine_id, "all": machines is None, "machines": list(machines or ())},
        )
        return [_json(r) for r in cur.fetchall()]


def rollback(
    conn: psycopg.Connection,
    machine_id: str,
    username: str | None,
    kind: str = "detector",
    signing_key: PrivateKeyLike | None = None,
) -> dict[str, Any]:
    """Put the previously active model (of ``kind``) back in service; the current one
    becomes retired with the reason recorded. With ``signing_key`` the restored model gets
    a signed rollback statement (an edge accepts the older version only with one); without,
    its statement is cleared, so only edges that do not require statements follow."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"models:{machine_id}",))
    current = conn.execute(
        "SELECT id, version FROM model_registry WHERE machine_id = %s AND kind = %s "
        "AND status = 'active'",
        (machine_id, kind),
    ).fetchone()
    if current is None:
        raise NotFoundError("machine_id", f"machine {machine_id!r} has no {_noun(kind)} in service")
    previous = conn.execute(
        "SELECT id FROM model_registry WHERE machine_id = %s AND kind = %s "
        "AND status = 'retired' AND activated_at IS NOT NULL AND version < %s "
        "ORDER BY version DESC LIMIT 1",
        (machine_id, kind, current[1]),
    ).fetchone()
    if previous is None:
        raise FieldError(
            "machine_id", f"no earlier {_noun(kind)} of this machine was ever in service"
        )
    conn.execute(
        "UPDATE model_registry SET status = 'retired', reason = coalesce(reason || '; ', '') "
        "|| %s WHERE id = %s",
        (f"rolled back by {username or 'cli'}", current[0]),
    )
    conn.execute(
        "UPDATE model_registry SET status = 'active', activated_at = now(), statement = NULL "
        "WHERE id = %s",
        (previous[0],),
    )
    if signing_key is not None:
        _sign(conn, int(previous[0]), signing_key, purpose="rollback", rollback_from=current[1])
    result = active(conn, machine_id, kind)
    assert result is not None
    return result


def _noun(kind: str) -> str:
    return "RUL model" if kind == "rul" else "model"


def request_training(conn: psycopg.Connection, machine_id: str, username: str | None) -> int:
    existing = conn.execute(
        "SELECT id FROM training_jobs WHERE machine_id = %s AND status IN ('queued', 'running')",
        (machine_id,),
    ).fetchone()
    if existing:
        return int(existing[0])  # one pending job per machine is enough
    row = conn.execute(
        "INSERT INTO training_jobs (machine_id, requested_by) VALUES (%s, %s) RETURNING id",
        (machine_id, username),
    ).fetchone()
    assert row is not None
    return int(row[0])


def job(conn: psycopg.Connection, job_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, machine_id, requested_by, requested_at, started_at, finished_at, status, "
            "model_id, error FROM training_jobs WHERE id = %s",
            (job_id,),
        )
        row = cur.fetchone()
    if row is None:
        return None
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def claim_job(conn: psycopg.Connection) -> tuple[int, str] | None:
    """The oldest queued job, marked running (its own transaction: the caller commits)."""
    row = conn.execute(
        "UPDATE training_jobs SET status = 'running', started_at = now() WHERE id = ("
        "SELECT id FROM training_jobs WHERE status = 'queued' ORDER BY requested_at "
        "FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id, machine_id"
    ).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def finish_job(
    conn: psycopg.Connection, job_id: int, model_id: int | None, error: str | None
) -> None:
    conn.execute(
        "UPDATE training_jobs SET status = %s, finished_at = now(), model_id = %s, error = %s "
        "WHERE id = %s",
        ("failed" if error else "done", model_id, error, job_id),
    )
