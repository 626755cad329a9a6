"""For edges: the resolved thresholds of one machine, polled by ``edge/threshold_sync.py``.

The table is what dashboards colour by (machine override, else fleet, else catalog:
``cloud.thresholds.effective``); ``version`` is a hash of it, so the edge knows a change by
comparing one string, and every anomaly it stores names the table that judged it.

An edge's key reads the thresholds of its own machines only: a machine whose newest stored
reading came from another edge is refused (403). A machine without readings yet is open to
any edge key (a new rig must get its limits before its first reading); the bootstrap key
(edge ``default``) reads every machine.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import psycopg
from fastapi import APIRouter

from cloud import thresholds
from cloud.api.deps import Db
from cloud.api.errors import ApiError
from cloud.api.guards import EdgePrincipal, IngestEdge
from cloud.api.params import MachineId
from cloud.api.schemas import Out

router = APIRouter(prefix="/api/v1", tags=["thresholds"])

VERSION_CHARS = 16


class EdgeThresholdOut(Out):
    critical_low: float | None
    critical_high: float | None
    warn_low: float | None
    warn_high: float | None
    source: str


class EdgeThresholdsOut(Out):
    """The thresholds in force on one machine, and their version (a hash of the table)."""

    machine_id: str
    version: str
    thresholds: dict[str, EdgeThresholdOut]


def table_version(table: dict[str, dict[str, Any]]) -> str:
    canonical = json.dumps(table, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:VERSION_CHARS]


def latest_edge_of(conn: psycopg.Connection, machine_id: str) -> str | None:
    """The edge whose reading of ``machine_id`` is the newest stored (index on
    (machine_id, timestamp)), or None when the machine has no readings."""
    row = conn.execute(
        'SELECT edge_id FROM sensor_readings WHERE machine_id = %s ORDER BY "timestamp" DESC '
        "LIMIT 1",
        (machine_id,),
    ).fetchone()
    return None if row is None else str(row[0])


def edge_table(
    conn: psycopg.Connection, machine_id: str, principal: EdgePrincipal
) -> dict[str, Any] | str:
    """The machine's table, or the edge that owns the machine when ``principal`` may not read
    it (one transaction: the check and the read see the same database). A key bound to
    machines reads exactly those; an unbound one those no other edge serves."""
    if principal.machines is not None:
        if machine_id not in principal.machines:
            return latest_edge_of(conn, machine_id) or "(not bound to this key)"
    elif principal.edge_id is not None:
        owner = latest_edge_of(conn, machine_id)
        if owner is not None and owner != principal.edge_id:
            return owner
    entries = thresholds.effective(conn, machine_id)
    table = {name: entry.as_json() for name, entry in sorted(entries.items())}
    return {"machine_id": machine_id, "version": table_version(table), "thresholds": table}


@router.get(
    "/edge/thresholds/{machine_id}",
    response_model=EdgeThresholdsOut,
    summary="For edges: the thresholds in force on one of its machines, with their version",
    responses={403: {"description": "the machine's readings come from another edge"}},
)
async def edge_thresholds(machine_id: MachineId, db: Db, edge: IngestEdge) -> dict[str, Any]:
    found = await db.run(edge_table, machine_id, edge)
    if isinstance(found, str):
        raise ApiError(
            403,
            "machine_id",
            f"machine {machine_id!r} is not this key's; this key belongs to {edge.name!r}",
        )
    return found
