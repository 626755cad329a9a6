"""Every input type's folder documents itself as Telegraf's plugins do: a ``sample.yaml``
that loads through the real config loader, and a ``README.md``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge.config import load_edge_config
from edge.inputs import registry

KINDS = list(registry.input_types())

BASE = {
    "edge_id": "sample-check",
    "output": {"kind": "http", "url": "https://cloud.example.net/api/v1/ingest"},
}


@pytest.mark.parametrize("kind", KINDS)
def test_sample_loads_through_the_config_loader(kind: str, tmp_path: Path) -> None:
    entry = registry.input_type(kind)
    sample = entry.folder() / "sample.yaml"
    doc = yaml.safe_load(sample.read_text(encoding="utf-8"))
    assert list(doc) == ["inputs"], f"{sample}: only an inputs: section"
    assert list(doc["inputs"]) == [kind], f"{sample}: only inputs.{kind}"
    config_doc = {
        **BASE,
        "buffer": {"path": str(tmp_path / "buffer.db")},
        "output": {**BASE["output"], "api_key_file": str(tmp_path / "key")},
        **doc,
    }
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config_doc, sort_keys=False), encoding="utf-8")
    config = load_edge_config(path)
    entries = config.inputs.of_kind(kind)
    assert entries and all(isinstance(e, entry.config_model()) for e in entries)
    assert config.deprecations == []
    # The input class the registry names imports and fulfils the contract.
    assert not getattr(entry.input_class(), "__abstractmethods__", None)


@pytest.mark.parametrize("kind", KINDS)
def test_every_input_folder_has_a_readme(kind: str) -> None:
    readme = registry.input_type(kind).folder() / "README.md"
    text = readme.read_text(encoding="utf-8")
    assert "sample.yaml" in text, f"{readme} points to the sample"
