"""What each kind of rule finds now: the faults currently present, one ``Finding`` per fault
(its group key: rule + machine + sensor, or rule + edge). Rules are state-based: the evaluator
compares the findings of a pass with the firing alerts, opens what is new, updates what
persists and resolves what is gone, so a burst of anomalous readings is one alert.

A rule that cannot be evaluated raises (``RuleUnavailable`` when the data it needs does not
reach the cloud yet); the evaluator then keeps that rule's alerts as they are and goes on with
the others.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from cloud.alerting.config import (
    SEVERITY_RANK,
    AnomalyParams,
    BufferDropsParams,
    EdgeBacklogParams,
    EdgeOfflineParams,
    PersistenceParams,
    PredictedParams,
    RulParams,
    rule_params,
)
from cloud.store.predicted import track as track_predictions


class RuleUnavailable(Exception):
    """The data this kind of rule needs is not kept by this installation (yet)."""


@dataclass(frozen=True, slots=True)
class Rule:
    id: int
    name: str
    kind: str
    machine_id: str | None
    sensor: str | None
    params: dict[str, Any]
    severity: str
    channel_ids: list[int]
    enabled: bool


@dataclass(frozen=True, slots=True)
class Finding:
    group_key: str
    machine_id: str | None
    sensor: str | None
    edge_id: str | None
    severity: str
    summary: str
    occurrences: int = 1
    first_anomaly_id: int | None = None
    last_anomaly_id: int | None = None


@dataclass
class Memory:
    """What a rule remembers between passes (backlog samples per edge)."""

    samples: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)


def _scope(rule: Rule, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    where = ""
    if rule.machine_id is not None:
        where += " AND machine_id = %(machine)s"
        params["machine"] = rule.machine_id
    return where, params


def _severity_of(rule: Rule, found: str | None) -> str:
    # The rule's severity is a floor: a critical anomaly under a warning rule stays critical.
    if found is None:
        return rule.severity
    return max(rule.severity, found, key=lambda s: SEVERITY_RANK.get(s, 0))


def _anomaly_groups(
    conn: psycopg.Connection, rule: Rule, window_s: int, min_severity: str
) -> list[dict[str, Any]]:
    """Unresolved anomalies that arrived within the window, grouped by machine and sensor
    (the rule's sensor, else the anomaly's first-ranked sensor)."""
    params: dict[str, Any] = {
        "window": f"{window_s} seconds",
        "ranks": [s for s, r in SEVERITY_RANK.items() if r >= SEVERITY_RANK[min_severity]],
    }
    where, params = _scope(rule, params)
    if rule.sensor is not None:
        where += " AND %(sensor)s = ANY(detected_sensors)"
        params["sensor"] = rule.sensor
        sensor_expr = "%(sensor)s"
    else:
        sensor_expr = "coalesce(detected_sensors[1], '*')"
    query = (
        f"SELECT machine_id, {sensor_expr} AS sensor, count(*) AS n, min(id) AS first_id, "
        "max(id) AS last_id, "
        "max(CASE severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END) AS rank "
        "FROM anomaly_detections WHERE created_at > now() - %(window)s::interval "
        f"AND state <> 'resolved' AND severity = ANY(%(ranks)s){where} "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


_RANK_NAMES = {r: s for s, r in SEVERITY_RANK.items()}


def _anomaly(conn: psycopg.Connection, rule: Rule, memory: Memory) -> list[Finding]:
    p = rule_params(rule.kind, rule.params)
    assert isinstance(p, AnomalyParams)
    out = []
    for g in _anomaly_groups(conn, rule, p.window_s, p.min_severity):
        severity = _RANK_NAMES[g["rank"]]
        out.append(
            Finding(
                group_key=f"{rule.id}:{g['machine_id']}:{g['sensor']}",
                machine_id=g["machine_id"],
                sensor=g["sensor"],
                edge_id=None,
                severity=_severity_of(rule, severity),
                summary=f"{severity} anomaly on machine {g['machine_id']}, sensor {g['sensor']}"
                f" ({g['n']} in the last {p.window_s} s)",
                occurrences=int(g["n"]),
                first_anomaly_id=g["first_id"],
                last_anomaly_id=g["last_id"],
            )
        )
    return out


def _persistence(conn: psycopg.Connection, rule: Rule, memory: Memory) -> list[Finding]:
    p = rule_params(rule.kind, rule.params)
    assert isinstance(p, PersistenceParams)
    out = []
    for g in _anomaly_groups(conn, rule, p.window_s, p.min_severity):
        if g["n"] < p.count:
            continue
        out.append(
            Finding(
                group_key=f"{rule.id}:{g['machine_id']}:{g['sensor']}",
                machine_id=g["machine_id"],
                sensor=g["sensor"],
                edge_id=None,
                severity=_severity_of(rule, None),
                summary=f"{g['n']} anomalies on machine {g['machine_id']}, sensor {g['sensor']}, "
                f"within {p.window_s} s (rule: {p.count})",
                occurrences=int(g["n"]),
                first_anomaly_id=g["first_id"],
                last_anomaly_id=g["last_id"],
            )
        )
    return out


def _predicted(conn: psycopg.Connection, rule: Rule, memory: Memory) -> list[Finding]:
    p = rule_params(rule.kind, rule.params)
    assert isinstance(p, PredictedParams)
    params: dict[str, Any] = {"window": f"{p.window_s} seconds"}
    where, params = _scope(rule, params)
    # The newest reading of each machine decides: a prediction that no longer holds resolves.
    query = (
        "SELECT DISTINCT ON (machine_id) machine_id, "
        "(detection->>'probability_ahead')::double precision AS p FROM sensor_readings "
        f'WHERE "timestamp" > now() - %(window)s::interval{where} '
        "AND detection ? 'probability_ahead' ORDER BY machine_id, \"timestamp\" DESC"
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    # The fleet feed's predicted anomalies (opened, confirmed or expired by the same bound).
    track_predictions(conn, p.probability, p.window_s, p.horizon_s, rule.machine_id)
    return [
        Finding(
            group_key=f"{rule.id}:{r['machine_id']}",
            machine_id=r["machine_id"],
            sensor=None,
            edge_id=None,
            severity=rule.severity,
            summary=f"anomaly predicted on machine {r['machine_id']}: probability "
            f"{r['p']:.2f} (bound {p.probability:.2f})",
        )
        for r in rows
        if r["p"] is not None and r["p"] >= p.probability
    ]


def _rul(conn: psycopg.Connection, rule: Rule, memory: Memory) -> list[Finding]:
    p = rule_params(rule.kind, rule.params)
    assert isinstance(p, RulParams)
    exists = conn.execute("SELECT to_regclass('machine_rul') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        raise RuleUnavailable("remaining-life estimates are not kept (no machine_rul table)")
    params: dict[str, Any] = {"age": f"{p.max_age_s} seconds"}
    where, params = _scope(rule, params)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT DISTINCT ON (machine_id) machine_id, rul_hours FROM machine_rul "
            f"WHERE ts > now() - %(age)s::interval{where} ORDER BY machine_id, ts DESC",
            params,
        )
        rows = cur.fetchall()
    return [
        Finding(
            group_key=f"{rule.id}:{r['machine_id']}",
            machine_id=r["machine_id"],
            sensor=None,
            edge_id=None,
            severity=rule.severity,
            summary=f"machine {r['machine_id']}: remaining life {r['rul_hours']:.1f} h "
            f"(bound {p.hours:g} h)",
        )
        for r in rows
        if r["rul_hours"] < p.hours
    ]


def _edge_offline(conn: psycopg.Connection, rule: Rule, memory: Memory) -> list[Finding]:
    p = rule_params(rule.kind, rule.params)
    assert isinstance(p, EdgeOfflineParams)
    params: dict[str, Any] = {
        "offline": f"{p.offline_s} seconds",
        "forget": f"{p.forget_s} seconds",
    }
    where = ""
    if p.edge_id is not None:
        where = " AND edge_id = %(edge)s"
        params["edge"] = p.edge_id
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT edge_id, seen, extract(epoch FROM now() - seen) AS silent FROM ("
            # Last seen: the newest batch, backlog figure or status report (the edge reports
            # its status every few seconds with a batch: cloud/edge_fleet.py).
            "SELECT edge_id, GREATEST(last_seen, coalesce(backlog_reported_at, last_seen), "
            "coalesce(status_reported_at, last_seen)) AS seen "
            f"FROM edges WHERE true{where}) e "
            "WHERE seen < now() - %(offline)s::interval AND seen > now() - %(forget)s::interval "
            "ORDER BY edge_id",
            params,
        )
        rows = cur.fetchall()
    return [
        Finding(
            group_key=f"{rule.id}:edge:{r['edge_id']}",
            machine_id=None,
            sensor=None,
            edge_id=r["edge_id"],
            severity=rule.severity,
            summary=f"edge {r['edge_id']} silent for {int(r['silent'])} s (bound {p.offline_s} s)",
        )
        for r in rows
    ]


def _edge_backlog(conn: psycopg.Connection, rule: Rule, memory: Memory) -> list[Finding]:
    p = rule_params(rule.kind, rule.params)
    assert isinstance(p, EdgeBacklogParams)
    params: dict[str, Any] = {}
    where = ""
    if p.edge_id is not None:
        where = " AND edge_id = %(edge)s"
        params["edge"] = p.edge_id
    rows = conn.execute(
        f"SELECT edge_id, backlog FROM edges WHERE backlog IS NOT NULL{where}", params
    ).fetchall()
    now = time.monotonic()
    out = []
    for edge_id, backlog in rows:
        samples = memory.samples.setdefault(edge_id, deque())
        samples.append((now, int(backlog)))
        while samples and samples[0][0] < now - p.window_s:
            samples.popleft()
        oldest = samples[0][1]
        # Growing: deeper now than at the start of the window the evaluator has seen (a
        # backlog that is deep but draining raises nothing, it is being dealt with; at first
        # sight growth is not known yet).
        if backlog >= p.min_backlog and backlog > oldest:
            out.append(
                Finding(
                    group_key=f"{rule.id}:edge:{edge_id}",
                    machine_id=None,
                    sensor=None,
                    edge_id=edge_id,
                    severity=rule.severity,
                    summary=f"edge {edge_id} backlog growing: {oldest} -> {backlog} readings",
                )
            )
    return out


def _buffer_drops(conn: psycopg.Connection, rule: Rule, memory: Memory) -> list[Finding]:
    p = rule_params(rule.kind, rule.params)
    assert isinstance(p, BufferDropsParams)
    column = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = 'edges' "
        "AND column_name = 'dropped_total'"
    ).fetchone()
    if column is None:
        # edges.dropped_total comes with the edge status reports (migration 0019): a
        # database not migrated that far cannot know.
        raise RuleUnavailable("edges do not report buffer drops to the cloud yet")
    params: dict[str, Any] = {"min": p.min_drops}
    where = ""
    if p.edge_id is not None:
        where = " AND edge_id = %(edge)s"
        params["edge"] = p.edge_id
    rows = conn.execute(
        f"SELECT edge_id, dropped_total FROM edges WHERE dropped_total >= %(min)s{where}",
        params,
    ).fetchall()
    return [
        Finding(
            group_key=f"{rule.id}:edge:{edge_id}",
            machine_id=None,
            sensor=None,
            edge_id=edge_id,
            severity=rule.severity,
            summary=f"edge {edge_id} dropped {dropped} buffered readings",
        )
        for edge_id, dropped in rows
    ]


EVALUATE = {
    "anomaly": _anomaly,
    "persistence": _persistence,
    "predicted": _predicted,
    "rul": _rul,
    "edge_offline": _edge_offline,
    "edge_backlog": _edge_backlog,
    "buffer_drops": _buffer_drops,
}


def evaluate(conn: psycopg.Connection, rule: Rule, memory: Memory) -> list[Finding]:
    return EVALUATE[rule.kind](conn, rule, memory)
