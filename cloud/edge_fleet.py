"""The fleet of edges as they report themselves (``shared.edge_status``): stored per edge from
the Kafka header ``edge_status`` (aggregator) or the HTTP header ``X-Edge-Status`` (ingest API),
read by ``GET /api/v1/edges``, the fleet page and the alert rules ``edge_offline`` (last seen)
and ``buffer_drops`` (``edges.dropped_total``).

A report is a snapshot: a newer one replaces the older (an older one arriving late, e.g. from a
backlog drained out of order, never overwrites a newer one)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from shared.edge_status import StatusError, parse_status
from shared.logs import log_event

log = logging.getLogger(__name__)


def parse_header(edge_id: str | None, raw: bytes | str | None) -> dict[str, Any] | None:
    """The checked report of a header, or None (absent, or refused with a warning: a broken
    report must never cost the readings it travels with). ``edge_id``: the edge the report
    travels for (None: a report sent alone, which names its edge itself); a report naming
    another edge is refused."""
    if raw is None:
        return None
    try:
        doc = parse_status(raw)
    except StatusError as exc:
        log_event(log, logging.WARNING, "edge status refused", edge_id=edge_id, error=str(exc))
        return None
    if edge_id is not None and doc["edge_id"] not in (None, edge_id):
        log_event(
            log,
            logging.WARNING,
            "edge status refused",
            edge_id=edge_id,
            error=f"edge_status.edge_id: {doc['edge_id']!r} is not the sending edge",
        )
        return None
    return doc


def record_status(conn: psycopg.Connection, statuses: Mapping[str, dict[str, Any]]) -> None:
    """Store each edge's newest report (in the caller's transaction)."""
    if not statuses:
        return
    rows = [
        (
            edge_id,
            doc["version"],
            doc["status"],
            doc["uptime_s"],
            doc["dropped"],
            doc["backlog"],
            doc["machines"],
            Jsonb(doc["inputs"]),
            Jsonb(doc["models"]),
            Jsonb(doc["thresholds"]),
            datetime.fromisoformat(doc["at"]),
        )
        for edge_id, doc in sorted(statuses.items())
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO edges (edge_id, version, status, uptime_s, dropped_total, backlog, "
            "backlog_reported_at, machines, inputs, models, thresholds, status_reported_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, now(), %s, %s, %s, %s, %s) "
            "ON CONFLICT (edge_id) DO UPDATE SET version = excluded.version, "
            "status = excluded.status, uptime_s = excluded.uptime_s, "
            "dropped_total = excluded.dropped_total, machines = excluded.machines, "
            "backlog = excluded.backlog, backlog_reported_at = excluded.backlog_reported_at, "
            "inputs = excluded.inputs, models = excluded.models, "
            "thresholds = excluded.thresholds, status_reported_at = excluded.status_reported_at "
            "WHERE edges.status_reported_at IS NULL "
            "OR edges.status_reported_at <= excluded.status_reported_at",
            rows,
        )


def list_edges(
    conn: psycopg.Connection, machines: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """Every edge the cloud has heard from, newest first; with ``machines`` (a scoped
    operator's), only the edges that serve one of them."""
    where, params = "", {}
    if machines is not None:
        where = "WHERE machines && %(machines)s::text[]"
        params["machines"] = list(machines)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT edge_id, first_seen, "
            "GREATEST(last_seen, coalesce(backlog_reported_at, last_seen), "
            "coalesce(status_reported_at, last_seen)) AS last_seen, "
            "version, status, uptime_s, backlog, dropped_total, machines, inputs, models, "
            "thresholds, status_reported_at, "
            "extract(epoch FROM now() - GREATEST(last_seen, "
            "coalesce(backlog_reported_at, last_seen), "
            "coalesce(status_reported_at, last_seen))) AS silent_s "
            f"FROM edges {where} ORDER BY edge_id",
            params,
        )
        rows = cur.fetchall()
    if machines is not None:
        allowed = set(machines)
        # A scoped operator learns nothing about the other machines an edge serves.
        for row in rows:
            row["machines"] = [m for m in row["machines"] if m in allowed]
            row["models"] = {m: v for m, v in row["models"].items() if m in allowed}
            row["thresholds"] = {m: v for m, v in row["thresholds"].items() if m in allowed}
    return rows
