"""Root-cause reports: facts first, then a writer (the model, or offline), then a stored
version.

The model writes only the judgement (summary, ranked causes with evidence, actions,
confidence); the factual sections (contributing sensors, cited readings, similar anomalies,
threshold changes, model, remaining life) are the gathered facts themselves, so a model
cannot invent a reading or a past anomaly. An answer that is not JSON, breaks the schema, or
names none of the contributing sensors is not used: the offline writer answers and the report
says why.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cloud.assistant import report_offline
from cloud.assistant.provider import ChatClient, ProviderError
from cloud.fielderror import NotFoundError
from shared.logs import log_event

log = logging.getLogger(__name__)

SYSTEM_PROMPT = """You are a reliability engineer writing a root-cause report on an anomaly
detected on an industrial machine. Use ONLY the facts in the FACTS JSON the user sends, and
the failure-mode catalog given with them. Cite sensor names and reading values from the
facts as evidence; do not invent readings, sensors or past events.
Return ONLY raw JSON (no markdown) with exactly these keys:
- "summary": string, 2-5 sentences naming the contributing sensors
- "likely_causes": list (most likely first, at most 4) of objects
  {"cause": string, "likelihood": number 0..1, "evidence": [string, ...],
   "failure_mode": catalog id or null}
- "recommended_actions": list of strings, most urgent first (at most 8)
- "confidence": {"level": "low"|"medium"|"high", "score": number 0..1, "why": string}"""

MAX_TEXT = 2000


def schema_problem(answer: dict[str, Any]) -> str | None:
    """Why the model's report breaks the schema, or None."""
    if not isinstance(answer.get("summary"), str) or not answer["summary"].strip():
        return "summary: expected non-empty text"
    causes = answer.get("likely_causes")
    if not isinstance(causes, list) or not causes:
        return "likely_causes: expected a non-empty list"
    for i, cause in enumerate(causes):
        if not isinstance(cause, dict) or not isinstance(cause.get("cause"), str):
            return f"likely_causes[{i}].cause: expected text"
        likelihood = cause.get("likelihood")
        if (
            isinstance(likelihood, bool)
            or not isinstance(likelihood, int | float)
            or not 0 <= likelihood <= 1
        ):
            return f"likely_causes[{i}].likelihood: expected a number from 0 to 1"
        evidence = cause.get("evidence")
        if not isinstance(evidence, list) or not all(isinstance(e, str) for e in evidence):
            return f"likely_causes[{i}].evidence: expected a list of text"
    actions = answer.get("recommended_actions")
    if not isinstance(actions, list) or not actions or not all(isinstance(a, str) for a in actions):
        return "recommended_actions: expected a non-empty list of text"
    confidence = answer.get("confidence")
    if not isinstance(confidence, dict) or confidence.get("level") not in {"low", "medium", "high"}:
        return "confidence.level: expected low, medium or high"
    score = confidence.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        return "confidence.score: expected a number from 0 to 1"
    return None


def _clean(answer: dict[str, Any]) -> dict[str, Any]:
    """The model's sections, bounded, with no key it was not asked for."""
    return {
        "summary": answer["summary"].strip()[:MAX_TEXT],
        "likely_causes": [
            {
                "cause": c["cause"].strip()[:500],
                "failure_mode": str(c["failure_mode"])[:64]
                if isinstance(c.get("failure_mode"), str)
                else None,
                "likelihood": round(float(c["likelihood"]), 2),
                "evidence": [e.strip()[:500] for e in c["evidence"][:8]],
            }
            for c in answer["likely_causes"][:4]
        ],
        "recommended_actions": [a.strip()[:500] for a in answer["recommended_actions"][:8]],
        "confidence": {
            "level": answer["confidence"]["level"],
            "score": round(float(answer["confidence"]["score"]), 2),
            "why": str(answer["confidence"].get("why") or "")[:500],
        },
    }


def _names_a_sensor(written: dict[str, Any], facts: dict[str, Any]) -> bool:
    names = [s["sensor"] for s in facts["contributing_sensors"]]
    if not names:
        return True
    text = json.dumps(written, ensure_ascii=False).lower()
    return any(name.lower() in text or name.replace("_", " ") in text for name in names)


async def write(
    facts: dict[str, Any], client: ChatClient | None, model: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(written sections, how: path, model, note)."""
    how: dict[str, Any] = {"path": "offline", "model": None, "note": None}
    if client is not None:
        categories = {s["category"] for s in facts["contributing_sensors"] if s.get("category")}
        user = (
            "FACTS:\n"
            + json.dumps(facts, ensure_ascii=False, default=str)
            + "\nFAILURE MODE CATALOG:\n"
            + json.dumps(report_offline.catalog_for(categories), ensure_ascii=False)
        )
        try:
            answer = await client.complete_json(model=model, system=SYSTEM_PROMPT, user=user)
            problem = schema_problem(answer.content)
            if problem is not None:
                raise ProviderError(f"the model's report breaks the schema ({problem})")
            written = _clean(answer.content)
            if not _names_a_sensor(written, facts):
                raise ProviderError("the model's report names none of the contributing sensors")
            return written, {"path": "model", "model": answer.model, "note": None}
        except ProviderError as exc:
            how["note"] = f"model {model} not used: {exc}; the offline writer answered"
            log_event(log, logging.WARNING, "report fell back offline", reason=str(exc))
    return report_offline.write(facts), how


def assemble(facts: dict[str, Any], written: dict[str, Any]) -> dict[str, Any]:
    return {
        **written,
        "contributing_sensors": facts["contributing_sensors"],
        "readings_cited": facts["readings_cited"],
        "similar_anomalies": facts["similar_anomalies"],
        "threshold_changes": facts["threshold_changes"],
        "model_in_service": facts["model"],
        "remaining_life": facts["remaining_life"],
        "window": facts["window"],
    }


# -- storage --------------------------------------------------------------------------------

_COLUMNS = "id, anomaly_id, version, path, model, note, facts, report, created_by, created_at"


def store(
    conn: psycopg.Connection,
    anomaly_id: int,
    facts: dict[str, Any],
    report: dict[str, Any],
    how: dict[str, Any],
    username: str,
) -> dict[str, Any]:
    # Serialise versions of one anomaly: two users generating at once get 1 and 2.
    conn.execute("SELECT id FROM anomaly_detections WHERE id = %s FOR UPDATE", (anomaly_id,))
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "INSERT INTO anomaly_reports (anomaly_id, version, path, model, note, facts, "
            "report, created_by) SELECT %s, coalesce(max(version), 0) + 1, %s, %s, %s, %s, "
            f"%s, %s FROM anomaly_reports WHERE anomaly_id = %s RETURNING {_COLUMNS}",
            (
                anomaly_id,
                how["path"],
                how["model"],
                how["note"],
                Jsonb(facts),
                Jsonb(report),
                username,
                anomaly_id,
            ),
        )
        row = cur.fetchone()
    assert row is not None
    log_event(
        log,
        logging.INFO,
        "report written",
        anomaly_id=anomaly_id,
        version=row["version"],
        path=how["path"],
        model=how["model"],
    )
    return out(row)


def out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "anomaly_id": row["anomaly_id"],
        "version": row["version"],
        "path": row["path"],
        "model": row["model"],
        "note": row["note"],
        "created_by": row["created_by"],
        "created_at": row["created_at"].isoformat(),
        "machine_id": row["facts"]["anomaly"]["machine_id"],
        "anomaly": row["facts"]["anomaly"],
        "report": row["report"],
    }


def load(conn: psycopg.Connection, anomaly_id: int, version: int | None) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        if version is None:
            cur.execute(
                f"SELECT {_COLUMNS} FROM anomaly_reports WHERE anomaly_id = %s "
                "ORDER BY version DESC LIMIT 1",
                (anomaly_id,),
            )
        else:
            cur.execute(
                f"SELECT {_COLUMNS} FROM anomaly_reports WHERE anomaly_id = %s AND version = %s",
                (anomaly_id, version),
            )
        row = cur.fetchone()
    if row is None:
        which = "no report" if version is None else f"no report version {version}"
        raise NotFoundError(
            "version" if version else "anomaly_id", f"{which} for anomaly {anomaly_id}"
        )
    return out(row)


def anomaly_machine(conn: psycopg.Connection, anomaly_id: int) -> str | None:
    row = conn.execute(
        "SELECT machine_id FROM anomaly_detections WHERE id = %s", (anomaly_id,)
    ).fetchone()
    return str(row[0]) if row else None


def versions(conn: psycopg.Connection, anomaly_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT version, path, model, note, created_by, created_at FROM anomaly_reports "
        "WHERE anomaly_id = %s ORDER BY version DESC",
        (anomaly_id,),
    ).fetchall()
    return [
        {
            "version": r[0],
            "path": r[1],
            "model": r[2],
            "note": r[3],
            "created_by": r[4],
            "created_at": r[5].isoformat(),
        }
        for r in rows
    ]
