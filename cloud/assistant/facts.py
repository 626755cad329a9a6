"""The facts a root-cause report is written from, gathered before any writing starts.

For one anomaly: the contributing sensors and their shares, the window of readings around it
(each contributing sensor's value, its baseline before the anomaly, the peak, the first
threshold crossing), the thresholds in force and recent threshold changes, the model that
judged it and its metrics, the remaining-life estimate where one is stored, and the similar
past anomalies of the machine and of the fleet: nearest neighbours over contribution
profiles (cosine similarity of the sensor -> share vectors), with their workflow state and
what operators noted when they resolved (or acknowledged) them. Everything is limited to the
machines the caller may see.

Both writers (the model and the offline one) get exactly these facts; the report's factual
sections (sensors, cited readings, similar anomalies) come from here, not from the writer.
"""

from __future__ import annotations

import math
import statistics
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from cloud import thresholds
from cloud.fielderror import NotFoundError
from cloud.store.anomalies import get_anomaly
from shared.catalog import SENSOR_INDEX, SENSORS_BY_NAME, Thresholds
from shared.message import format_ts

WINDOW_BEFORE = timedelta(minutes=30)
WINDOW_AFTER = timedelta(minutes=5)
MAX_WINDOW_ROWS = 3000
# Past anomalies compared (newest first): enough for months of a fleet's anomalies, bounded.
MAX_CANDIDATES = 5000
NEIGHBOURS = 5
MIN_SIMILARITY = 0.5
RECENT_THRESHOLD_CHANGES = timedelta(days=7)


def contribution_profile(details: dict[str, Any] | None, sensors: list[str]) -> dict[str, float]:
    """sensor -> share: the detector's contributions, else the flagged sensors equally."""
    profile: dict[str, float] = {}
    for item in (details or {}).get("contributions") or []:
        if isinstance(item, dict) and isinstance(item.get("sensor"), str):
            share = item.get("share")
            if isinstance(share, int | float) and math.isfinite(share) and share > 0:
                profile[item["sensor"]] = profile.get(item["sensor"], 0.0) + float(share)
    if not profile and sensors:
        profile = {s: 1.0 / len(sensors) for s in sensors}
    total = sum(profile.values())
    return {s: v / total for s, v in profile.items()} if total > 0 else {}


def cosine(a: dict[str, float], b: dict[str, float]) -> float:
    dot = sum(v * b.get(k, 0.0) for k, v in a.items())
    na = math.sqrt(sum(v * v for v in a.values()))
    nb = math.sqrt(sum(v * v for v in b.values()))
    return dot / (na * nb) if na and nb else 0.0


def _r(value: float | None, digits: int = 4) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _units(conn: psycopg.Connection, names: list[str]) -> dict[str, dict[str, Any]]:
    info: dict[str, dict[str, Any]] = {}
    custom = [n for n in names if n not in SENSOR_INDEX]
    for name in names:
        spec = SENSORS_BY_NAME.get(name)
        if spec is not None:
            info[name] = {"unit": spec.unit, "category": spec.category.value, "custom": False}
    if custom:
        rows = conn.execute(
            "SELECT c.name, c.unit, c.category, s.min_range, s.max_range FROM custom_sensors c "
            "LEFT JOIN custom_sensor_specs s USING (name) WHERE c.name = ANY(%s)",
            (custom,),
        ).fetchall()
        for name, unit, category, lo, hi in rows:
            info[name] = {
                "unit": unit,
                "category": category,
                "custom": True,
                "min_range": lo,
                "max_range": hi,
            }
        for name in custom:
            info.setdefault(name, {"unit": None, "category": None, "custom": True})
    return info


def _window(
    conn: psycopg.Connection, machine_id: str, at: datetime, sensors: list[str]
) -> list[tuple[datetime, dict[str, float]]]:
    columns = [sql.Identifier(s) for s in sensors if s in SENSOR_INDEX]
    custom = [s for s in sensors if s not in SENSOR_INDEX]
    select = sql.SQL(", ").join(
        [sql.Identifier("timestamp"), *columns, sql.Identifier("custom_sensors")]
    )
    query = sql.SQL(
        'SELECT {} FROM sensor_readings WHERE machine_id = %s AND "timestamp" >= %s '
        'AND "timestamp" <= %s ORDER BY "timestamp" LIMIT %s'
    ).format(select)
    core = [s for s in sensors if s in SENSOR_INDEX]
    out = []
    with conn.cursor() as cur:
        cur.execute(query, (machine_id, at - WINDOW_BEFORE, at + WINDOW_AFTER, MAX_WINDOW_ROWS))
        for row in cur.fetchall():
            values: dict[str, float] = {}
            for name, value in zip(core, row[1 : 1 + len(core)], strict=True):
                if value is not None:
                    values[name] = float(value)
            extra = row[-1] or {}
            for name in custom:
                value = extra.get(name)
                if isinstance(value, int | float):
                    values[name] = float(value)
            out.append((row[0], values))
    return out


def _sensor_facts(
    name: str,
    share: float,
    at: datetime,
    series: list[tuple[datetime, float]],
    value: float | None,
    entry: thresholds.ThresholdEntry | None,
    info: dict[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    before = [v for t, v in series if t < at]
    baseline_mean = statistics.fmean(before) if before else None
    baseline_std = statistics.pstdev(before) if len(before) > 1 else None
    z = None
    if value is not None and baseline_mean is not None and baseline_std:
        z = (value - baseline_mean) / baseline_std
    state = None
    crossed = None
    cited: list[dict[str, Any]] = []
    unit = info.get("unit")
    if entry is not None:
        rule = Thresholds(entry.critical_low, entry.critical_high, entry.warn_low, entry.warn_high)
        s = rule.classify(value)
        state = s.value if s else None
        for t, v in series:
            c = rule.classify(v)
            if c is not None and c.value == "critical":
                crossed = (t, v)
                break
    direction = None
    if value is not None and baseline_mean is not None:
        direction = "high" if value > baseline_mean else "low" if value < baseline_mean else None
    if value is not None:
        cited.append(
            {
                "sensor": name,
                "timestamp": format_ts(at),
                "value": value,
                "unit": unit,
                "what": "value at the anomaly",
            }
        )
    if series:
        peak_t, peak_v = max(
            series,
            key=lambda p: abs(p[1] - baseline_mean) if baseline_mean is not None else p[1],
        )
        if peak_t != at:
            cited.append(
                {
                    "sensor": name,
                    "timestamp": format_ts(peak_t),
                    "value": peak_v,
                    "unit": unit,
                    "what": "largest deviation in the window",
                }
            )
    if crossed is not None and crossed[0] != at:
        cited.append(
            {
                "sensor": name,
                "timestamp": format_ts(crossed[0]),
                "value": crossed[1],
                "unit": unit,
                "what": "first critical reading in the window",
            }
        )
    slope = None
    if len(before) >= 3:
        first_t = series[0][0]
        xs = [(t - first_t).total_seconds() / 60 for t, _ in series if t < at]
        mx, my = statistics.fmean(xs), statistics.fmean(before)
        var = sum((x - mx) ** 2 for x in xs)
        if var > 0:
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, before, strict=True)) / var
    facts = {
        "sensor": name,
        "share": _r(share, 3),
        "unit": unit,
        "category": info.get("category"),
        "custom": info.get("custom", False),
        "value": value,
        "direction": direction,
        "baseline_mean": _r(baseline_mean),
        "baseline_std": _r(baseline_std),
        "z": _r(z, 3),
        "trend_per_min": _r(slope, 3),
        "window_min": _r(min((v for _, v in series), default=None)),
        "window_max": _r(max((v for _, v in series), default=None)),
        "samples": len(series),
        "threshold_state": state,
        "thresholds": entry.as_json() if entry else None,
    }
    return facts, cited


def _threshold_changes(
    conn: psycopg.Connection, machine_id: str, at: datetime
) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT sensor, machine_id, low, high, warn_low, warn_high, updated_at, updated_by "
        "FROM thresholds WHERE (machine_id IS NULL OR machine_id = %s) AND updated_at >= %s "
        "ORDER BY updated_at DESC LIMIT 20",
        (machine_id, at - RECENT_THRESHOLD_CHANGES),
    ).fetchall()
    return [
        {
            "sensor": r[0],
            "scope": f"machine {r[1]}" if r[1] else "fleet",
            "critical_low": r[2],
            "critical_high": r[3],
            "changed_at": format_ts(r[6]),
            "changed_by": r[7],
            "after_anomaly": r[6] > at,
        }
        for r in rows
    ]


def _model(
    conn: psycopg.Connection, machine_id: str, details: dict[str, Any] | None
) -> dict[str, Any] | None:
    version = (details or {}).get("model_version")
    # Once the registry keeps several kinds of model (detectors, remaining life), only a
    # detector judged the anomaly.
    has_kind = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = 'model_registry' "
        "AND column_name = 'kind'"
    ).fetchone()
    kind = sql.SQL("AND kind = 'detector'") if has_kind else sql.SQL("")
    query = sql.SQL(
        "SELECT version, status, strategy, metrics, activated_at, trained_to, training_rows "
        "FROM model_registry WHERE machine_id = %s {} "
        "ORDER BY (version::text = %s) DESC, (status = 'active') DESC, version DESC LIMIT 1"
    ).format(kind)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, (machine_id, str(version or "").rsplit("v", 1)[-1]))
        row = cur.fetchone()
    if row is None:
        return {"version": version, "in_registry": False} if version else None
    metrics = {
        k: _r(float(v))
        for k, v in (row["metrics"] or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    return {
        "version": row["version"],
        "reported_version": version,
        "status": row["status"],
        "strategy": row["strategy"],
        "metrics": dict(list(metrics.items())[:12]),
        "trained_to": format_ts(row["trained_to"]) if row["trained_to"] else None,
        "training_rows": row["training_rows"],
        "in_registry": True,
    }


def _similar(
    conn: psycopg.Connection,
    anomaly_id: int,
    machine_id: str,
    profile: dict[str, float],
    visible: tuple[str, ...] | None,
) -> dict[str, list[dict[str, Any]]]:
    if not profile:
        return {"machine": [], "fleet": []}
    # What operators wrote when they resolved (or acknowledged) them: the anomaly workflow's
    # notes (migration 0016).
    query = sql.SQL(
        "SELECT id, machine_id, reading_ts, detection_method, anomaly_score, detected_sensors, "
        "details, coalesce(resolution_note, ack_note), state, coalesce(resolved_by, "
        "acknowledged_by) FROM anomaly_detections WHERE id <> %s "
        "AND detected_sensors && %s::text[] {scope} ORDER BY reading_ts DESC LIMIT %s"
    ).format(
        scope=sql.SQL("AND machine_id = ANY(%s)") if visible is not None else sql.SQL(""),
    )
    params: list[Any] = [anomaly_id, list(profile)]
    if visible is not None:
        params.append(list(visible))
    params.append(MAX_CANDIDATES)
    scored = []
    for row in conn.execute(query, params).fetchall():
        other = contribution_profile(row[6], list(row[5]))
        similarity = cosine(profile, other)
        if similarity >= MIN_SIMILARITY:
            scored.append((similarity, row, other))
    scored.sort(key=lambda s: (-s[0], -s[1][2].timestamp()))

    def out(similarity: float, row: Any, other: dict[str, float]) -> dict[str, Any]:
        return {
            "id": row[0],
            "machine_id": row[1],
            "timestamp": format_ts(row[2]),
            "method": row[3],
            "score": _r(row[4]),
            "similarity": _r(similarity, 3),
            "sensors": sorted(other, key=lambda s: -other[s])[:5],
            "note": row[7],
            "state": row[8],
            "noted_by": row[9],
        }

    same = [out(*s) for s in scored if s[1][1] == machine_id][:NEIGHBOURS]
    fleet = [out(*s) for s in scored if s[1][1] != machine_id][:NEIGHBOURS]
    return {"machine": same, "fleet": fleet}


def _remaining_life(
    conn: psycopg.Connection, machine_id: str, at: datetime
) -> dict[str, Any] | None:
    """The machine's remaining-life estimate nearest before the anomaly, where the cloud keeps
    them (``machine_rul``, filled from the readings' ``detection.rul``); None otherwise."""
    exists = conn.execute("SELECT to_regclass('machine_rul') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT ts, rul_hours, low_hours, high_hours, critical_sensors, model_version "
            "FROM machine_rul WHERE machine_id = %s AND ts <= %s ORDER BY ts DESC LIMIT 1",
            (machine_id, at + WINDOW_AFTER),
        )
        row = cur.fetchone()
    if row is None:
        return None
    return {
        "timestamp": format_ts(row["ts"]),
        "rul_hours": _r(row["rul_hours"]),
        "low_hours": _r(row["low_hours"]),
        "high_hours": _r(row["high_hours"]),
        "critical_sensors": row["critical_sensors"],
        "model_version": row["model_version"],
    }


def gather(
    conn: psycopg.Connection, anomaly_id: int, visible: tuple[str, ...] | None
) -> dict[str, Any]:
    """Every fact of the report on ``anomaly_id`` (NotFoundError when the caller may not see
    its machine: an anomaly one may not see does not exist for one)."""
    found = get_anomaly(conn, anomaly_id)
    if found is None or (visible is not None and found[0].machine_id not in visible):
        raise NotFoundError("anomaly_id", f"no anomaly {anomaly_id}")
    anomaly, reading = found
    at = anomaly.reading_ts
    profile = contribution_profile(anomaly.details, list(anomaly.detected_sensors))
    names = sorted(profile, key=lambda s: -profile[s])
    info = _units(conn, names)
    series_rows = _window(conn, anomaly.machine_id, at, names) if names else []
    table = thresholds.effective(conn, anomaly.machine_id)
    values = {}
    if reading is not None:
        values = {**reading["values"], **reading["custom_sensors"]}
    sensors, cited = [], []
    for name in names:
        series = [(t, v[name]) for t, v in series_rows if name in v]
        value = values.get(name)
        facts, readings = _sensor_facts(
            name, profile[name], at, series, value, table.get(name), info.get(name, {})
        )
        sensors.append(facts)
        cited.extend(readings)
    details = anomaly.details or {}
    return {
        "anomaly": {
            "id": anomaly.id,
            "machine_id": anomaly.machine_id,
            "edge_id": anomaly.edge_id,
            "timestamp": format_ts(at),
            "method": anomaly.detection_method,
            "score": _r(anomaly.anomaly_score),
            "sensors": list(anomaly.detected_sensors),
            "missing_sensors": details.get("missing_sensors") or [],
            "probability_ahead": details.get("probability_ahead"),
        },
        "window": {
            "from": format_ts(at - WINDOW_BEFORE),
            "to": format_ts(at + WINDOW_AFTER),
            "readings": len(series_rows),
        },
        "contributing_sensors": sensors,
        "readings_cited": cited,
        "threshold_changes": _threshold_changes(conn, anomaly.machine_id, at),
        "model": _model(conn, anomaly.machine_id, details),
        "remaining_life": _remaining_life(conn, anomaly.machine_id, at),
        "similar_anomalies": _similar(conn, anomaly.id, anomaly.machine_id, profile, visible),
    }
