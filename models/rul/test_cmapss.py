"""``python -m models.evaluate cmapss`` on standard-format files built from the shared C-MAPSS
training file: a small subset of units, held out the way NASA made the test set."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from models.rul.data import make_holdout, read_units, write_units

SHARED = Path(
    os.environ.get("RIG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
TRAIN = SHARED / "cmapss" / "train_FD001.txt"


@pytest.mark.slow  # trains the RUL ensemble (TensorFlow)
@pytest.mark.skipif(not TRAIN.is_file(), reason=f"{TRAIN} not present")
def test_cmapss_command_on_a_held_out_subset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.evaluate import main

    subset = tmp_path / "subset.txt"
    write_units(subset, read_units(TRAIN)[:24])
    data = make_holdout(subset, tmp_path / "split", n_test=6, seed=3)
    assert (
        main(["cmapss", "--data", str(data), "--epochs", "2", "--members", "2", "--trees", "10"])
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert {"rmse", "score", "coverage", "mean_interval_width", "bundle_bytes"} <= set(result)
    assert result["test_units"] == 6 and result["train_units"] == 18
    assert 0.0 <= result["coverage"] <= 1.0 and result["mean_interval_width"] > 0
    # One line per model before the JSON, the edge bundle's first.
    assert any("(onnx, edge)" in line for line in lines[:-1])


def test_cmapss_command_names_a_missing_file(tmp_path: Path) -> None:
    from models.rul.cmapss import evaluate_cmapss

    with pytest.raises(FileNotFoundError, match=r"test_FD001\.txt"):
        write_units(tmp_path / "train_FD001.txt", [])
        evaluate_cmapss(tmp_path)
