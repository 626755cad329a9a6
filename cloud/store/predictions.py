"""The edge models' latest forecast per machine (``probability_ahead`` in the detection)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

# Older scores are not a prediction of anything any more.
FRESH_MINUTES = 15


@dataclass(frozen=True, slots=True)
class Prediction:
    machine_id: str
    timestamp: datetime
    detection: dict[str, Any]


_QUERY = f"""
SELECT t.machine_id, r."timestamp", r.detection
FROM reading_totals t
JOIN LATERAL (
    SELECT s."timestamp", s.detection FROM sensor_readings s
    WHERE s.machine_id = t.machine_id
      AND s."timestamp" > now() - interval '{FRESH_MINUTES} minutes'
      AND s.detection ? 'probability_ahead'
    ORDER BY s."timestamp" DESC LIMIT 1
) r ON true
WHERE %(all)s OR t.machine_id = ANY(%(machines)s)
ORDER BY t.machine_id
"""


def latest_predictions(
    conn: psycopg.Connection, visible: tuple[str, ...] | None
) -> list[Prediction]:
    """Per machine (``visible`` only; None: all), its newest reading of the last
    FRESH_MINUTES whose detection carries a forecast."""
    with conn.cursor(row_factory=class_row(Prediction)) as cur:
        cur.execute(
            _QUERY,
            {"all": visible is None, "machines": list(visible or ())},
        )
        return cur.fetchall()
