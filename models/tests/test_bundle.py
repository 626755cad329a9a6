from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models.tests.conftest import Trained
from shared.model_bundle import (
    BundleError,
    TamperedBundleError,
    UnsignedBundleError,
    WrongKeyError,
    extract_bundle,
    generate_keypair,
    pack_bundle,
    verify_bundle,
)


@pytest.fixture
def bundle_copy(trained: Trained, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained.bundle, tmp_path / "bundle"))


def test_signed_bundle_verifies(trained: Trained) -> None:
    manifest = verify_bundle(trained.bundle, trained.public_pem)
    assert manifest["version"] == "test-1"


def test_changed_byte_in_a_model_file_is_rejected(trained: Trained, bundle_copy: Path) -> None:
    path = bundle_copy / "lstm.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(TamperedBundleError, match=r"lstm\.onnx"):
        verify_bundle(bundle_copy, trained.public_pem)


def test_edited_manifest_is_rejected(trained: Trained, bundle_copy: Path) -> None:
    path = bundle_copy / "manifest.json"
    doc = json.loads(path.read_text())
    doc["strategy_thresholds"]["hybrid_smart"] *= 10
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    with pytest.raises(TamperedBundleError, match="signature"):
        verify_bundle(bundle_copy, trained.public_pem)


def test_added_file_is_rejected(trained: Trained, bundle_copy: Path) -> None:
    (bundle_copy / "extra.onnx").write_bytes(b"x")
    with pytest.raises(TamperedBundleError, match=r"extra\.onnx"):
        verify_bundle(bundle_copy, trained.public_pem)


def test_unsigned_bundle_is_rejected(trained: Trained, bundle_copy: Path) -> None:
    (bundle_copy / "manifest.sig").unlink()
    with pytest.raises(UnsignedBundleError):
        verify_bundle(bundle_copy, trained.public_pem)


def test_wrong_key_is_rejected(trained: Trained) -> None:
    _, other_public = generate_keypair()
    with pytest.raises(WrongKeyError):
        verify_bundle(trained.bundle, other_public)


def test_tar_bundle_round_trip(trained: Trained, tmp_path: Path) -> None:
    archive = pack_bundle(trained.bundle, tmp_path / "bundle.tar.gz")
    assert verify_bundle(archive, trained.public_pem)["version"] == "test-1"
    out = extract_bundle(archive, tmp_path / "out", trained.public_pem)
    assert (out / "manifest.json").is_file()
    _, other_public = generate_keypair()
    with pytest.raises(WrongKeyError):
        extract_bundle(archive, tmp_path / "out2", other_public)
    assert not (tmp_path / "out2").exists()


def test_not_a_bundle(tmp_path: Path, trained: Trained) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar")
    with pytest.raises(BundleError):
        verify_bundle(junk, trained.public_pem)
