"""The offline report writer: the sections a model would write (summary, likely causes with
their evidence, recommended actions, confidence), from the gathered facts and the failure-mode
catalog (``failure_modes.yaml``). Deterministic: the same facts give the same report.

A mode scores by the share of each contributing sensor that points at it (strongly when the
mode names the sensor, weakly when only the category matches), its prior, whether the
deviation goes the mode's way, and the other sensors it expects to move with it. The
likelihoods are those scores normalised over the modes shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from shared.catalog import Category

MAX_CAUSES = 4
MAX_ACTIONS = 6


@dataclass(frozen=True, slots=True)
class FailureMode:
    id: str
    category: str
    cause: str
    sensors: tuple[str, ...]
    direction: str
    with_: tuple[str, ...]
    prior: float
    actions: tuple[str, ...]


def parse_catalog(doc: Any) -> tuple[FailureMode, ...]:
    """The catalog from its YAML document; ValueError naming the entry at fault."""
    if not isinstance(doc, dict) or not isinstance(doc.get("modes"), list):
        raise ValueError("failure_modes.yaml: expected a top-level 'modes' list")
    modes = []
    seen: set[str] = set()
    categories = {c.value for c in Category}
    for index, item in enumerate(doc["modes"]):
        where = f"failure_modes.yaml modes[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a mapping")
        try:
            mode = FailureMode(
                id=str(item["id"]),
                category=str(item["category"]),
                cause=str(item["cause"]),
                sensors=tuple(str(s) for s in item.get("sensors") or ()),
                direction=str(item.get("direction", "any")),
                with_=tuple(str(s) for s in item.get("with") or ()),
                prior=float(item["prior"]),
                actions=tuple(str(a) for a in item["actions"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc!r}") from None
        if mode.id in seen:
            raise ValueError(f"{where}.id: {mode.id!r} used twice")
        seen.add(mode.id)
        if mode.category not in categories:
            raise ValueError(f"{where}.category: {mode.category!r} is not a sensor category")
        if mode.direction not in {"high", "low", "any"}:
            raise ValueError(f"{where}.direction: high, low or any")
        if not 0 < mode.prior <= 1 or not mode.actions:
            raise ValueError(f"{where}: prior in (0, 1] and at least one action")
        modes.append(mode)
    return tuple(modes)


@cache
def catalog() -> tuple[FailureMode, ...]:
    text = resources.files("cloud.assistant").joinpath("failure_modes.yaml").read_text("utf-8")
    return parse_catalog(yaml.safe_load(text))


def catalog_for(categories: set[str]) -> list[dict[str, Any]]:
    """The catalog entries of ``categories``, as a model is shown them."""
    return [
        {
            "id": m.id,
            "category": m.category,
            "cause": m.cause,
            "sensors": list(m.sensors),
            "direction": m.direction,
            "actions": list(m.actions),
        }
        for m in catalog()
        if m.category in categories
    ]


def _fmt(value: Any, unit: str | None = None) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"{text} {unit}" if unit else text


def _sensor_evidence(s: dict[str, Any]) -> str:
    parts = [f"{s['sensor']} carried {round(100 * (s['share'] or 0))} % of the anomaly"]
    if s.get("value") is not None:
        parts.append(f"read {_fmt(s['value'], s.get('unit'))}")
    if s.get("baseline_mean") is not None:
        spread = f" ± {_fmt(s['baseline_std'])}" if s.get("baseline_std") else ""
        parts.append(f"against a baseline of {_fmt(s['baseline_mean'])}{spread}")
    if s.get("z") is not None:
        parts.append(f"(z = {s['z']:+.1f})")
    t = s.get("thresholds") or {}
    if s.get("threshold_state") == "critical":
        limit = t.get("critical_high") if s.get("direction") == "high" else t.get("critical_low")
        if limit is not None:
            parts.append(f"beyond its critical limit {_fmt(limit, s.get('unit'))}")
    elif s.get("threshold_state") == "warning":
        parts.append("inside its warning band")
    return " ".join(parts)


def _rank(facts: dict[str, Any]) -> list[tuple[float, FailureMode, list[str]]]:
    sensors = facts["contributing_sensors"]
    moving = {s["sensor"] for s in sensors}
    scores: dict[str, tuple[float, FailureMode, list[str]]] = {}
    for mode in catalog():
        score = 0.0
        evidence: list[str] = []
        for s in sensors:
            share = s["share"] or 0.0
            if s["sensor"] in mode.sensors:
                weight = 1.0
            elif s.get("category") == mode.category and not mode.sensors:
                weight = 0.6
            elif s.get("category") == mode.category:
                weight = 0.3
            else:
                continue
            if mode.direction != "any" and s.get("direction") not in (None, mode.direction):
                weight *= 0.3
            score += share * weight
            evidence.append(_sensor_evidence(s))
        if score == 0:
            continue
        joint = [w for w in mode.with_ if w in moving]
        score = score * mode.prior * (1 + 0.5 * len(joint))
        if joint:
            evidence.append(f"moved together with {', '.join(joint)}, as this failure mode does")
        scores[mode.id] = (score, mode, evidence)
    return sorted(scores.values(), key=lambda item: (-item[0], item[1].id))


def _confidence(facts: dict[str, Any], top_share: float, ranked: list[Any]) -> dict[str, Any]:
    reasons = []
    score = 0.3
    sensors = facts["contributing_sensors"]
    if any(s.get("threshold_state") == "critical" for s in sensors):
        score += 0.2
        reasons.append("a contributing sensor is beyond its critical limit")
    if top_share >= 0.5:
        score += 0.15
        reasons.append("one sensor dominates the anomaly")
    similar = facts["similar_anomalies"]
    if similar["machine"] or similar["fleet"]:
        score += 0.1
        reasons.append("similar anomalies happened before")
    if any((s.get("samples") or 0) >= 10 for s in sensors):
        score += 0.1
        reasons.append("a baseline of readings before the anomaly exists")
    if len(ranked) >= 2 and ranked[0][0] < 1.5 * ranked[1][0]:
        score -= 0.1
        reasons.append("the two likeliest causes are close")
    if facts["anomaly"].get("missing_sensors"):
        score -= 0.1
        reasons.append("some sensors were missing from the reading")
    if not sensors:
        score = 0.1
        reasons = ["the detection named no contributing sensor"]
    score = max(0.05, min(0.95, score))
    level = "high" if score >= 0.7 else "medium" if score >= 0.45 else "low"
    return {"level": level, "score": round(score, 2), "why": "; ".join(reasons) or "few facts"}


def write(facts: dict[str, Any]) -> dict[str, Any]:
    """The written sections of the report from ``facts`` (see ``facts.gather``)."""
    anomaly = facts["anomaly"]
    sensors = facts["contributing_sensors"]
    ranked = _rank(facts)[:MAX_CAUSES]
    total = sum(score for score, _, _ in ranked) or 1.0
    causes: list[dict[str, Any]] = [
        {
            "cause": mode.cause,
            "failure_mode": mode.id,
            "likelihood": round(score / total, 2),
            "evidence": evidence,
        }
        for score, mode, evidence in ranked
    ]
    actions: list[str] = []
    for _, mode, _ in ranked:
        for action in mode.actions:
            if action not in actions and len(actions) < MAX_ACTIONS:
                actions.append(action)
    if not actions:
        actions.append("Inspect the machine: no failure mode of the catalog matches the sensors")
    recent = [c for c in facts["threshold_changes"] if not c["after_anomaly"]]
    if recent:
        actions.append(
            "Review the threshold change(s) made shortly before: "
            + ", ".join(f"{c['sensor']} ({c['scope']}, {c['changed_at']})" for c in recent[:3])
        )
    lead = sensors[0] if sensors else None
    top_share = (lead or {}).get("share") or 0.0
    parts = [
        f"Anomaly {anomaly['id']} on machine {anomaly['machine_id']} at {anomaly['timestamp']} "
        f"({anomaly['method']}, score {anomaly['score']})."
    ]
    if lead is not None:
        shares = ", ".join(
            f"{s['sensor']} ({round(100 * (s['share'] or 0))} %)" for s in sensors[:4]
        )
        parts.append(f"Contributing sensors: {shares}.")
        evidence = _sensor_evidence(lead)
        parts.append(evidence[:1].upper() + evidence[1:] + ".")
    else:
        parts.append("The detection named no contributing sensor.")
    if causes:
        first = str(causes[0]["cause"])
        parts.append(f"Most likely cause: {first[:1].lower()}{first[1:]}.")
    life = facts.get("remaining_life")
    if life and life.get("rul_hours") is not None:
        parts.append(
            f"Estimated remaining life {life['rul_hours']:g} h "
            f"({life['low_hours']:g}–{life['high_hours']:g} h)."
        )
    similar = facts["similar_anomalies"]
    count = len(similar["machine"]) + len(similar["fleet"])
    if count:
        parts.append(
            f"{len(similar['machine'])} similar anomalies on this machine and "
            f"{len(similar['fleet'])} elsewhere in the fleet."
        )
    return {
        "summary": " ".join(parts),
        "likely_causes": causes,
        "recommended_actions": actions,
        "confidence": _confidence(facts, top_share, ranked),
    }
