"""Machines that have sent readings, with their totals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row


@dataclass(frozen=True, slots=True)
class MachineSummary:
    machine_id: str
    first_seen: datetime
    total_readings: int
    last_timestamp: datetime | None


def list_machines(
    conn: psycopg.Connection, visible: tuple[str, ...] | None
) -> list[MachineSummary]:
    """Machines by id; ``visible``: only these (None: every machine)."""
    with conn.cursor(row_factory=class_row(MachineSummary)) as cur:
        cur.execute(
            "SELECT m.machine_id, m.first_seen, coalesce(t.total, 0) AS total_readings, "
            "t.last_timestamp FROM machines m LEFT JOIN reading_totals t USING (machine_id) "
            "WHERE %(all)s OR m.machine_id = ANY(%(machines)s) ORDER BY m.machine_id",
            {"all": visible is None, "machines": list(visible or ())},
        )
        return cur.fetchall()
