"""Model sync for machines the configuration does not name (MQTT and Sparkplug sources):
learned from the readings, bounded, served from the next poll on, and loaded again after an
offline restart from what an earlier run installed. A real HTTP server answers as the cloud
does (the fixtures of ``edge.test_model_sync_guards``)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from edge import model_sync
from edge import test_model_sync_guards as guards
from edge.test_model_sync_guards import Cloud, Edge, Models, Route, _info

# The fixtures of the guards' tests, under the same names.
cloud = guards.cloud
keys = guards.keys
make_edge = guards.make_edge
models = guards.models


def _offer(cloud: Cloud, machine: str, model_id: int, bundle: bytes) -> None:
    url = f"/api/v1/edge/models/{machine}/bundle/{model_id}"
    info = _info(model_id, bundle, machine_id=machine, bundle_url=url)
    cloud.routes[f"/api/v1/edge/models/{machine}"] = Route(body=json.dumps(info).encode())
    cloud.routes[url] = Route(body=bundle)


def test_a_machine_seen_in_the_data_gets_its_model_and_keeps_it_offline(
    cloud: Cloud, make_edge: Callable[..., Edge], models: Models
) -> None:
    _offer(cloud, "mqtt-1", 5, models.v1)
    edge = make_edge(cloud.url, machines=("A",))
    edge.sync.load_installed()
    edge.sync.poll_once()
    assert "mqtt-1" not in edge.detector.versions()  # not configured, not seen yet
    # The daemon reports the machines of the readings it takes; repeats add nothing.
    assert edge.sync.observe(["mqtt-1", "A", "mqtt-1"]) == ["mqtt-1"]
    assert edge.sync.observe(["mqtt-1"]) == []
    assert edge.sync.poll_once() == ["mqtt-1"]
    assert edge.detector.versions() == {"mqtt-1": "v1"}
    # Restart without the cloud: the model installed for the seen machine runs again.
    cloud.routes.clear()
    again = make_edge("http://127.0.0.1:9", machines=("A",))
    again.sync.load_installed()
    assert again.detector.versions() == {"mqtt-1": "v1"}
    assert "mqtt-1" in again.sync.machines


def test_learned_machines_are_bounded_and_must_be_machine_ids(
    cloud: Cloud, make_edge: Callable[..., Edge], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_sync, "MAX_SEEN_MACHINES", 3)
    edge = make_edge(cloud.url, machines=("A",))
    added = edge.sync.observe([f"m{i}" for i in range(10)] + ["../etc", "A"])
    assert added == ["m0", "m1", "m2"]
    assert edge.sync.machines == ["A", "m0", "m1", "m2"]
    assert edge.sync.observe(["m9"]) == []
