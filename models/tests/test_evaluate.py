from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.evaluate import Confusion
from tests.support.processes import shared_data_dir

ROOT = Path(__file__).resolve().parents[2]


def test_confusion_metrics_follow_the_skab_formulas() -> None:
    c = Confusion()
    c.add(np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 1, 0, 1], bool))
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 1)
    assert c.f1 == 2 / (2 + 1)
    assert c.far == 50.0
    assert abs(c.mar - 100 / 3) < 1e-9


@pytest.mark.slow  # trains the LSTM (TensorFlow) on SKAB files
def test_skab_cli_on_two_files_prints_json_last(tmp_path: Path) -> None:
    source = shared_data_dir() / "skab" / "valve1"
    data = tmp_path / "skab" / "valve1"
    data.mkdir(parents=True)
    for name in ("0.csv", "1.csv"):
        shutil.copy(source / name, data / name)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "models.evaluate", "skab", "--data", str(tmp_path), "--epochs", "3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert set(result) >= {"f1", "far", "mar"}
    assert 0.0 <= result["f1"] <= 1.0
    assert any(line.startswith("hybrid_smart") for line in lines)


@pytest.mark.slow  # trains every component, the LSTM (TensorFlow) too
def test_sim_cli_prints_every_strategy_and_json_last(capsys: pytest.CaptureFixture[str]) -> None:
    from models.evaluate import main

    argv = ["sim", "--machines", "1", "--train-rows", "400", "--test-rows", "200"]
    assert main([*argv, "--epochs", "1", "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["strategy"] == "hybrid_smart" and result["faults"] == 5
    assert set(result) >= {"f1", "precision", "recall", "far", "delay_s", "mean_delay_s"}
    assert set(result["delay_s"]) == {"bearing_wear", "cavitation", "spike", "drift", "stuck"}
    assert set(result["per_kind"]) == set(result["delay_s"])
    for kind in result["per_kind"].values():
        assert set(kind) == {
            "faults_total",
            "faults_found",
            "false_alarm_rate",
            "detection_delay_s",
        }
        assert kind["faults_total"] == 1 and 0.0 <= kind["false_alarm_rate"] <= 1.0
    assert 0.0 <= result["false_alarm_rate"] <= 1.0
    assert 0.0 <= result["f1"] <= 1.0 and 0.0 <= result["far"] <= 100.0
    for strategy in ("isolation_forest", "lstm", "pca", "hybrid_or", "hybrid_and"):
        assert any(line.startswith(strategy) for line in lines), strategy
