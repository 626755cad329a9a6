"""Bundle reading is bounded before anything is trusted: member count, declared sizes and the
expanded stream are checked on real tar archives (plain and gzip), including gzip bombs."""

from __future__ import annotations

import gzip
import io
import tarfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.model_bundle import (
    DEFAULT_LIMITS,
    BundleError,
    BundleLimits,
    OversizedBundleError,
    TamperedBundleError,
    extract_bundle,
    generate_keypair,
    pack_bundle,
    sign_bundle,
    verify_bundle,
    write_manifest,
)

MiB = 1 << 20
# A bomb must expand far past the default per-member limit while staying a small download.
BOMB_BYTES = 4 * DEFAULT_LIMITS.member_bytes
# Memory a refusal may cost: a few buffers of the tar and gzip readers, never the bomb.
REFUSAL_PEAK_BYTES = 8 * MiB


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_keypair()


@pytest.fixture
def bundle_dir(tmp_path: Path, keys: tuple[bytes, bytes]) -> Path:
    directory = tmp_path / "bundle"
    directory.mkdir()
    (directory / "pca.onnx").write_bytes(bytes(range(256)) * 64)
    write_manifest(directory, {"version": "t-1"})
    sign_bundle(directory, keys[0])
    return directory


def _tar_gz_with_zeros(
    path: Path, name: str, size: int, header: tarfile.TarInfo | None = None
) -> Path:
    """A tar.gz whose one member expands to ``size`` zero bytes: a few hundred KB on disk."""
    with gzip.open(path, "wb", compresslevel=9) as gz:
        info = header or tarfile.TarInfo(name)
        info.size = size
        gz.write(info.tobuf(format=tarfile.PAX_FORMAT))
        block = bytes(MiB)
        left = size
        while left:
            step = min(left, MiB)
            gz.write(block[:step])
            left -= step
        gz.write(bytes(-size % tarfile.BLOCKSIZE) + bytes(2 * tarfile.BLOCKSIZE))
    return path


def _peak_while(call: Callable[[], object]) -> int:
    """Peak Python allocation while ``call`` runs (bytes objects from zlib and tar included)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        try:
            call()
        finally:
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("name", ["bundle.tar.gz", "bundle.tar"])
def test_tar_round_trip_plain_and_gzip(
    bundle_dir: Path, keys: tuple[bytes, bytes], tmp_path: Path, name: str
) -> None:
    archive = pack_bundle(bundle_dir, tmp_path / name)
    assert verify_bundle(archive, keys[1])["version"] == "t-1"
    out = extract_bundle(archive, tmp_path / "out", keys[1])
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "manifest.sig", "pca.onnx"]


def test_gzip_bomb_member_is_refused_on_its_header_without_expanding(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    bomb = _tar_gz_with_zeros(tmp_path / "bomb.tar.gz", "model.onnx", BOMB_BYTES)
    assert bomb.stat().st_size < 2 * MiB  # the download is small, the expansion is not

    def read() -> None:
        with pytest.raises(OversizedBundleError, match=r"'model\.onnx' declares \d+ bytes"):
            verify_bundle(bomb, keys[1])

    assert _peak_while(read) < REFUSAL_PEAK_BYTES
    with pytest.raises(OversizedBundleError):
        extract_bundle(bomb, tmp_path / "out", keys[1])
    assert not (tmp_path / "out").exists()


def test_pax_header_bomb_is_capped_by_the_stream_limit(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """tarfile reads a PAX header whole: the expanded stream itself must be capped."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    bomb = _tar_gz_with_zeros(tmp_path / "pax.tar.gz", "", 64 * MiB, header)
    limits = BundleLimits(members=4, member_bytes=MiB, total_bytes=2 * MiB)

    def read() -> None:
        with pytest.raises(OversizedBundleError, match="expands to more than"):
            verify_bundle(bomb, keys[1], limits)

    assert _peak_while(read) < 4 * limits.stream_bytes()


def test_members_that_add_up_past_the_total_are_refused(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    directory = tmp_path / "big"
    directory.mkdir()
    for name in ("a.onnx", "b.onnx", "c.onnx"):
        (directory / name).write_bytes(b"x" * 600_000)
    write_manifest(directory, {"version": "t"})
    sign_bundle(directory, keys[0])
    limits = BundleLimits(members=8, member_bytes=MiB, total_bytes=MiB)
    archive = pack_bundle(directory, tmp_path / "big.tar.gz")
    with pytest.raises(OversizedBundleError, match="add up to more than"):
        verify_bundle(archive, keys[1], limits)
    with pytest.raises(OversizedBundleError, match="add up to more than"):
        verify_bundle(directory, keys[1], limits)
    assert verify_bundle(archive, keys[1])["version"] == "t"  # within the defaults


def test_too_many_members_are_refused(
    tmp_path: Path, keys: tuple[bytes, bytes], bundle_dir: Path
) -> None:
    for i in range(DEFAULT_LIMITS.members):
        (bundle_dir / f"extra{i}.bin").write_bytes(b"")
    write_manifest(bundle_dir, {"version": "t"})
    sign_bundle(bundle_dir, keys[0])
    archive = pack_bundle(bundle_dir, tmp_path / "many.tar")
    with pytest.raises(OversizedBundleError, match="archive members"):
        verify_bundle(archive, keys[1])
    with pytest.raises(OversizedBundleError, match="files, more than"):
        verify_bundle(bundle_dir, keys[1])


def test_oversized_file_in_a_bundle_directory_is_refused_before_reading(
    tmp_path: Path, keys: tuple[bytes, bytes], bundle_dir: Path
) -> None:
    with (bundle_dir / "pca.onnx").open("r+b") as fh:
        fh.truncate(BOMB_BYTES)  # sparse: large declared size, nothing on disk

    def read() -> None:
        with pytest.raises(OversizedBundleError, match=r"'pca\.onnx' declares"):
            verify_bundle(bundle_dir, keys[1])

    assert _peak_while(read) < REFUSAL_PEAK_BYTES


@pytest.mark.parametrize(
    "name",
    ["../manifest.json", "sub/pca.onnx", "/etc/passwd", "..", "a\\b.onnx", ".hidden", "x" * 200],
)
def test_member_names_other_than_flat_file_names_are_refused(
    tmp_path: Path, keys: tuple[bytes, bytes], name: str
) -> None:
    archive = tmp_path / "names.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(BundleError, match="unexpected archive member"):
        verify_bundle(archive, keys[1])


def test_links_are_refused(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("pca.onnx")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(BundleError, match="unexpected archive member"):
        verify_bundle(archive, keys[1])


def test_truncated_and_damaged_archives_are_bundle_errors(
    tmp_path: Path, keys: tuple[bytes, bytes], bundle_dir: Path
) -> None:
    data = pack_bundle(bundle_dir, tmp_path / "ok.tar.gz").read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError):
        verify_bundle(truncated, keys[1])
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(data[:20] + bytes(b ^ 0xFF for b in data[20:40]) + data[40:])
    with pytest.raises(BundleError):
        verify_bundle(damaged, keys[1])
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 64)
    with pytest.raises(BundleError):
        verify_bundle(junk, keys[1])


def test_file_changed_after_signing_is_still_tampered(
    tmp_path: Path, keys: tuple[bytes, bytes], bundle_dir: Path
) -> None:
    (bundle_dir / "pca.onnx").write_bytes(b"changed")
    archive = pack_bundle(bundle_dir, tmp_path / "t.tar.gz")
    with pytest.raises(TamperedBundleError, match=r"pca\.onnx"):
        verify_bundle(archive, keys[1])
