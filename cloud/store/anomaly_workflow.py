"""The operator's workflow on anomalies (open -> acknowledged -> resolved, migration 0016) and
the context of one anomaly for its detail page: the readings around it, the contributing
sensors with their shares, the model and thresholds that judged it, similar past anomalies of
the same machine.

Every state change is announced on the live channel in its own transaction, so every open
feed and detail page follows without a reload.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row, dict_row

from cloud.assistant.facts import contribution_profile, cosine
from cloud.fielderror import NotFoundError
from cloud.live import notify_event
from cloud.store.anomalies import _COLUMNS, Anomaly
from cloud.thresholds import effective
from shared.catalog import CORE_SENSOR_NAMES
from shared.message import format_ts

STATES = ("open", "acknowledged", "resolved")
SEVERITIES = ("info", "warning", "critical")
# The window of readings shown around an anomaly, and at most this many of them (evenly
# thinned beyond that, so a 100 Hz machine does not send the browser 12 000 rows).
MAX_WINDOW_POINTS = 600
SIMILAR_LIMIT = 5
SIMILAR_CANDIDATES = 500
MIN_SIMILARITY = 0.5


class TransitionError(Exception):
    """A workflow step that does not apply to the anomaly's state (HTTP 409)."""

    def __init__(self, state: str, action: str) -> None:
        super().__init__(f"anomaly is {state}: it cannot be {action}")
        self.state = state


def _locked(conn: psycopg.Connection, anomaly_id: int, visible: tuple[str, ...] | None) -> Anomaly:
    with conn.cursor(row_factory=class_row(Anomaly)) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM anomaly_detections WHERE id = %s FOR UPDATE", (anomaly_id,)
        )
        row = cur.fetchone()
    # A scoped user learns nothing about other machines' anomalies, not even that they exist.
    if row is None or (visible is not None and row.machine_id not in visible):
        raise NotFoundError("anomaly_id", f"no anomaly {anomaly_id}")
    return row


def transition(
    conn: psycopg.Connection,
    anomaly_id: int,
    action: str,
    username: str,
    note: str,
    visible: tuple[str, ...] | None,
) -> Anomaly:
    """Acknowledge (``action='acknowledge'``, from open) or resolve (from open or
    acknowledged) one anomaly, recording who, when and the note; TransitionError otherwise."""
    row = _locked(conn, anomaly_id, visible)
    if action == "acknowledge":
        if row.state != "open":
            raise TransitionError(row.state, "acknowledged")
        conn.execute(
            "UPDATE anomaly_detections SET state = 'acknowledged', acknowledged_by = %s, "
            "acknowledged_at = now(), ack_note = %s WHERE id = %s",
            (username, note, anomaly_id),
        )
    elif action == "resolve":
        if row.state == "resolved":
            raise TransitionError(row.state, "resolved")
        conn.execute(
            "UPDATE anomaly_detections SET state = 'resolved', resolved_by = %s, "
            "resolved_at = now(), resolution_note = %s WHERE id = %s",
            (username, note, anomaly_id),
        )
    else:
        raise ValueError(f"unknown workflow action {action!r}")
    with conn.cursor(row_factory=class_row(Anomaly)) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM anomaly_detections WHERE id = %s", (anomaly_id,))
        updated = cur.fetchone()
    assert updated is not None  # locked above, in this transaction
    with conn.cursor() as cur:
        notify_event(cur, state_event(updated))
    return updated


def state_event(row: Anomaly) -> dict[str, Any]:
    """The live event of a workflow step (the feed and detail pages update from it)."""
    at = row.resolved_at if row.state == "resolved" else row.acknowledged_at
    return {
        "type": "anomaly_state",
        "id": row.id,
        "machine_id": row.machine_id,
        "state": row.state,
        "severity": row.severity,
        "by": row.resolved_by if row.state == "resolved" else row.acknowledged_by,
        "at": format_ts(at) if at is not None else None,
    }


def _window(
    conn: psycopg.Connection, row: Anomaly, sensors: list[str], window: timedelta
) -> list[dict[str, Any]]:
    core = [s for s in sensors if s in CORE_SENSOR_NAMES]
    custom = [s for s in sensors if s not in CORE_SENSOR_NAMES]
    columns = "".join(f', "{s}"' for s in core)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f'SELECT "timestamp", seq, custom_sensors{columns} FROM sensor_readings '
            'WHERE machine_id = %s AND "timestamp" BETWEEN %s AND %s ORDER BY "timestamp"',
            (row.machine_id, row.reading_ts - window, row.reading_ts + window),
        )
        rows = cur.fetchall()
    step = max(1, -(-len(rows) // MAX_WINDOW_POINTS))
    picked = rows[::step]
    # The anomalous reading itself is always in the window, however it is thinned.
    if not any(r["seq"] == row.seq and r["timestamp"] == row.reading_ts for r in picked):
        picked += [r for r in rows if r["seq"] == row.seq and r["timestamp"] == row.reading_ts]
        picked.sort(key=lambda r: r["timestamp"])
    out = []
    for r in picked:
        values = {s: r[s] for s in core if r[s] is not None}
        extra = r["custom_sensors"] or {}
        values.update({s: extra[s] for s in custom if s in extra})
        out.append({"timestamp": format_ts(r["timestamp"]), "values": values})
    return out


def _model(conn: psycopg.Connection, row: Anomaly) -> dict[str, Any] | None:
    details = row.details or {}
    version = details.get("model_version")
    if row.detection_method == "thresholds" and version is None:
        return None
    # The detector active on the machine when the reading was judged (the registry keeps
    # when each was activated); the detection's own model_version is the edge's word for it.
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT version, strategy, status, metrics, activated_at FROM model_registry "
            "WHERE machine_id = %s AND activated_at IS NOT NULL AND activated_at <= %s "
            "AND coalesce(kind, 'detector') = 'detector' ORDER BY activated_at DESC LIMIT 1",
            (row.machine_id, row.reading_ts),
        )
        found = cur.fetchone()
    return {
        "method": row.detection_method,
        "model_version": version if isinstance(version, str) else None,
        "registry_version": found["version"] if found else None,
        "strategy": found["strategy"] if found else None,
        "metrics": found["metrics"] if found else {},
        "activated_at": format_ts(found["activated_at"]) if found else None,
    }


def _similar(
    conn: psycopg.Connection, row: Anomaly, profile: dict[str, float]
) -> list[dict[str, Any]]:
    if not profile:
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, reading_ts, detection_method, anomaly_score, detected_sensors, details, "
            "severity, state, resolution_note FROM anomaly_detections "
            "WHERE machine_id = %s AND id <> %s AND reading_ts < %s "
            "AND detected_sensors && %s::text[] ORDER BY reading_ts DESC LIMIT %s",
            (row.machine_id, row.id, row.reading_ts, list(profile), SIMILAR_CANDIDATES),
        )
        candidates = cur.fetchall()
    scored = []
    for c in candidates:
        similarity = cosine(
            profile, contribution_profile(c["details"], list(c["detected_sensors"]))
        )
        if similarity >= MIN_SIMILARITY:
            scored.append((similarity, c))
    scored.sort(key=lambda s: (-s[0], -s[1]["reading_ts"].timestamp()))
    return [
        {
            "id": c["id"],
            "timestamp": format_ts(c["reading_ts"]),
            "method": c["detection_method"],
            "score": c["anomaly_score"],
            "severity": c["severity"],
            "state": c["state"],
            "similarity": round(similarity, 3),
            "sensors": list(c["detected_sensors"]),
            "note": c["resolution_note"],
        }
        for similarity, c in scored[:SIMILAR_LIMIT]
    ]


def anomaly_context(
    conn: psycopg.Connection, anomaly_id: int, window_s: int, visible: tuple[str, ...] | None
) -> dict[str, Any]:
    """Everything the detail page shows besides the anomaly row itself."""
    with conn.cursor(row_factory=class_row(Anomaly)) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM anomaly_detections WHERE id = %s", (anomaly_id,))
        row = cur.fetchone()
    if row is None or (visible is not None and row.machine_id not in visible):
        raise NotFoundError("anomaly_id", f"no anomaly {anomaly_id}")
    profile = contribution_profile(row.details, list(row.detected_sensors))
    contributions = [
        {"sensor": s, "share": round(share, 4)}
        for s, share in sorted(profile.items(), key=lambda kv: -kv[1])
    ]
    sensors = list(profile) or list(row.detected_sensors)
    limits = effective(conn, row.machine_id)
    judged_by = (row.details or {}).get("thresholds")
    return {
        "id": row.id,
        "machine_id": row.machine_id,
        "window_s": window_s,
        "window": _window(conn, row, sensors, timedelta(seconds=window_s)),
        "contributions": contributions,
        "model": _model(conn, row),
        # The limits now in force for the contributing sensors; ``judged_by`` is what the
        # detection itself says it used (the edge's thresholds version, when it sends one).
        "thresholds": {s: limits[s].as_json() for s in sensors if s in limits},
        "judged_by": judged_by if isinstance(judged_by, dict | str | int) else None,
        "similar": _similar(conn, row, profile),
    }


def count_by_state(
    conn: psycopg.Connection, visible: tuple[str, ...] | None, since: datetime | None
) -> dict[str, int]:
    """Open / acknowledged / resolved counts for the feed's header."""
    query = "SELECT state, count(*) FROM anomaly_detections WHERE true"
    params: list[Any] = []
    if visible is not None:
        query += " AND machine_id = ANY(%s)"
        params.append(list(visible))
    if since is not None:
        query += " AND reading_ts >= %s"
        params.append(since)
    counts = dict.fromkeys(STATES, 0)
    for state, n in conn.execute(query + " GROUP BY state", params).fetchall():
        counts[state] = int(n)
    return counts
