"""The Prometheus configuration, alert rules and Grafana dashboards shipped in deploy/cloud/:
promtool accepts them (Debian's prometheus package), every expression parses as PromQL and
names only metrics the code exports, and each dashboard has what Grafana's provisioning
needs to load it (uid, title, schema version, panels with ids, grid positions inside the
24-column grid that do not overlap, targets on the provisioned datasource)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric

HERE = Path(__file__).resolve().parent
PROM_DIR = HERE / "prometheus"
DASHBOARDS = sorted((HERE / "grafana" / "dashboards").glob("*.json"))
PROVISIONING = HERE / "grafana" / "provisioning"
METRIC_RE = re.compile(r"\b((?:rig|process|python)_[a-z0-9_]+|up)\b(?!\s*\()")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}


def _sample_names(families: list[Metric]) -> set[str]:
    return {f.name + suffix for f in families for suffix in SUFFIXES.get(f.type, ("",))}


@cache
def exported() -> frozenset[str]:
    """Every series name the API, aggregator, trainer and edge can expose, from their code."""
    import cloud.aggregator  # the lag gauge and dead-letter counter
    import cloud.api.throttle  # login failures and throttled bursts
    import cloud.metrics.api
    import cloud.metrics.trainer  # noqa: F401
    from cloud.metrics.aggregator import AggregatorCollector
    from edge.metrics import EdgeMetrics

    families = list(REGISTRY.collect())
    families += list(AggregatorCollector(object()).collect())
    families += list(EdgeMetrics(CollectorRegistry()).registry.collect())
    families += list(EdgeMetrics().registry.collect())
    return frozenset(_sample_names(families) | {"up"})


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool missing: make system-deps installs Debian's prometheus package"
    return found


def _rule_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def _dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        for panel in doc["panels"]:
            for target in panel["targets"]:
                out.append((f"{path.name}: {panel['title']}", target["expr"]))
    return out


def _unknown_metrics(expr: str) -> set[str]:
    # Strip label matchers' values and strings first: "5.." or "rig-edge" are not metrics.
    bare = re.sub(r'"[^"]*"', '""', expr)
    return {name for name in METRIC_RE.findall(bare)} - exported()


@pytest.mark.integration  # Debian's promtool
def test_promtool_accepts_the_rules_and_the_config(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = subprocess.run(
        [promtool, "check", "rules", str(PROM_DIR / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    # The config names /etc/prometheus/... as mounted in compose: checked from here.
    config = (PROM_DIR / "prometheus.yml").read_text().replace("/etc/prometheus/", f"{PROM_DIR}/")
    (tmp_path / "prometheus.yml").write_text(config)
    checked = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.integration  # Debian's promtool
def test_every_dashboard_expression_is_promql(tmp_path: Path) -> None:
    # promtool parses rule expressions: each panel query becomes a recording rule.
    records = [
        {"record": f"check:panel_{i}", "expr": expr.replace("$instance", ".*")}
        for i, (_where, expr) in enumerate(_dashboard_exprs())
    ]
    (tmp_path / "panels.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "panels", "rules": records}]})
    )
    result = subprocess.run(
        [_promtool(), "check", "rules", str(tmp_path / "panels.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_name_only_exported_metrics() -> None:
    problems = {alert: _unknown_metrics(expr) for alert, expr in _rule_exprs()}
    assert not {k: v for k, v in problems.items() if v}, problems


def test_dashboards_name_only_exported_metrics() -> None:
    problems = {where: _unknown_metrics(expr) for where, expr in _dashboard_exprs()}
    assert not {k: v for k, v in problems.items() if v}


def test_dashboards_cover_fleet_ingest_and_edge() -> None:
    assert {p.stem for p in DASHBOARDS} == {"rig-fleet", "rig-ingest", "rig-edge"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_loads_in_grafana_provisioning(path: Path) -> None:
    doc: dict[str, Any] = json.loads(path.read_text())
    datasource = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = datasource["datasources"]
    assert isinstance(doc["uid"], str) and re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", doc["uid"])
    assert doc["title"] and isinstance(doc["schemaVersion"], int) and doc["schemaVersion"] >= 36
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in doc["panels"]:
        assert panel["type"] in {"timeseries", "stat", "gauge", "table", "bargauge"}, panel
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        own = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not own & cells, f"{panel['title']} overlaps another panel"
        cells |= own
        assert panel["targets"], panel["title"]
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": source["type"], "uid": source["uid"]}
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)) and all(t["expr"] for t in panel["targets"])
    variables = {v["name"] for v in doc["templating"]["list"]}
    used = set(re.findall(r"\$(\w+)", json.dumps(doc["panels"])))
    assert used <= variables, f"undefined variables {used - variables}"


def test_compose_provisions_prometheus_and_grafana() -> None:
    compose = yaml.safe_load((HERE / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "rig-alpha.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    prometheus = compose["services"]["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
