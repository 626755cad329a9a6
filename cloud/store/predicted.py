"""Predicted anomalies: a machine whose newest platform verdict (the edge's own, or the
cloud's: never a client's, ``cloud/scoring.py``) gives ``probability_ahead`` at or over the
alert rule's bound is *predicted*; the prediction is *confirmed* by an actual anomaly of that
machine within the forecast horizon, and *expires* when the horizon passes without one.

One open prediction per machine at a time (a forecast that keeps saying so is the same
prediction). Run by the ``predicted`` alert rule on every evaluator pass (``track``); listed
for the fleet feed by ``list_predicted``."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

STATES = ("predicted", "confirmed", "expired")


@dataclass(frozen=True, slots=True)
class Predicted:
    id: int
    machine_id: str
    edge_id: str
    predicted_at: datetime
    horizon_until: datetime
    probability: float
    model_version: str | None
    state: str
    confirmed_by: int | None
    settled_at: datetime | None


def track(
    conn: psycopg.Connection,
    probability: float,
    window_s: int,
    horizon_s: int,
    machine_id: str | None = None,
) -> None:
    """Open, confirm and expire predictions (in the caller's transaction)."""
    params: dict[str, Any] = {
        "p": probability,
        "window": f"{window_s} seconds",
        "horizon": f"{horizon_s} seconds",
        "machine": machine_id,
    }
    scope = " AND machine_id = %(machine)s" if machine_id is not None else ""
    # Settle first: a prediction whose horizon has passed makes room for a new one.
    first_anomaly = (
        "FROM anomaly_detections d WHERE d.machine_id = p.machine_id AND d.is_anomaly "
        "AND d.reading_ts BETWEEN p.predicted_at AND p.horizon_until"
    )
    conn.execute(
        "UPDATE predicted_anomalies p SET state = 'confirmed', settled_at = now(), "
        f"confirmed_by = (SELECT d.id {first_anomaly} ORDER BY d.reading_ts LIMIT 1) "
        f"WHERE p.state = 'predicted' AND EXISTS (SELECT 1 {first_anomaly})"
        + (" AND p.machine_id = %(machine)s" if machine_id is not None else ""),
        params,
    )
    conn.execute(
        "UPDATE predicted_anomalies SET state = 'expired', settled_at = now() "
        f"WHERE state = 'predicted' AND horizon_until < now(){scope}",
        params,
    )
    conn.execute(
        "INSERT INTO predicted_anomalies (machine_id, edge_id, seq, predicted_at, "
        "horizon_until, probability, model_version) "
        'SELECT machine_id, edge_id, seq, "timestamp", "timestamp" + %(horizon)s::interval, '
        "p, detection->>'model_version' FROM ("
        '  SELECT DISTINCT ON (machine_id) machine_id, edge_id, seq, "timestamp", detection, '
        "  (detection->>'probability_ahead')::double precision AS p FROM sensor_readings "
        f'  WHERE "timestamp" > now() - %(window)s::interval{scope} '
        "  AND detection ? 'probability_ahead' "
        "  AND jsonb_typeof(detection->'probability_ahead') = 'number' "
        '  ORDER BY machine_id, "timestamp" DESC) newest '
        # A reading judged again (a replay) never reopens a prediction it already raised.
        "WHERE p >= %(p)s AND NOT EXISTS (SELECT 1 FROM predicted_anomalies o "
        '  WHERE o.machine_id = newest.machine_id AND o.predicted_at >= newest."timestamp") '
        "ON CONFLICT (machine_id) WHERE state = 'predicted' DO NOTHING",
        params,
    )


def list_predicted(
    conn: psycopg.Connection,
    visible: Collection[str] | None,
    machine_id: str | None = None,
    state: str | None = None,
    limit: int = 50,
) -> list[Predicted]:
    """Newest first; ``visible`` is a scoped user's machines (None: all)."""
    where = ["true"]
    params: dict[str, Any] = {"limit": limit}
    if visible is not None:
        where.append("machine_id = ANY(%(visible)s)")
        params["visible"] = list(visible)
    if machine_id is not None:
        where.append("machine_id = %(machine)s")
        params["machine"] = machine_id
    if state is not None:
        where.append("state = %(state)s")
        params["state"] = state
    with conn.cursor(row_factory=class_row(Predicted)) as cur:
        cur.execute(
            "SELECT id, machine_id, edge_id, predicted_at, horizon_until, probability, "
            "model_version, state, confirmed_by, settled_at FROM predicted_anomalies "
            f"WHERE {' AND '.join(where)} ORDER BY predicted_at DESC, id DESC LIMIT %(limit)s",
            params,
        )
        return cur.fetchall()
