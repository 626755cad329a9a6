"""Model bundles: what the cloud trains and the edge runs, and how the edge knows it is
genuine.

A bundle is a directory (or a tar of one, optionally gzipped) holding ``manifest.json``, the
model files it lists with their SHA-256 under ``files``, and ``manifest.sig``: an Ed25519
signature over the exact bytes of ``manifest.json``. Signing the manifest covers every file
through its hash. ``verify_bundle`` accepts a bundle only if the signature verifies with the
given public key, every listed file is present with its hash, and nothing else is there.

Reading is bounded before anything is trusted (``BundleLimits``): the number of members, each
member's declared size and the total are checked against the tar headers before a member is
read, and the decompressed stream itself is capped, so a gzip bomb (or a huge PAX header)
costs at most the limit in memory, never the archive's expanded size.

Only ``cryptography`` and the standard library: the edge imports this, and must not pull
TensorFlow or scikit-learn.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
SIGNATURE_ALGORITHM = "ed25519"


class BundleError(Exception):
    """A bundle that must not be loaded."""


class UnsignedBundleError(BundleError):
    pass


class WrongKeyError(BundleError):
    pass


class TamperedBundleError(BundleError):
    pass


class OversizedBundleError(BundleError):
    """More members or more bytes than ``BundleLimits`` allow (a gzip bomb ends here)."""


MiB = 1 << 20


@dataclass(frozen=True)
class BundleLimits:
    """What a bundle may hold. A real one has a manifest, a signature and one ONNX file per
    component (a few MB in all); the defaults leave room for growth while keeping the worst
    case within what a rig PC can hold in memory."""

    members: int = 32
    member_bytes: int = 64 * MiB
    total_bytes: int = 128 * MiB

    def stream_bytes(self) -> int:
        """Cap on the decompressed tar stream: the payload plus headers and padding (a header,
        a PAX header and its padding per member, and the end-of-archive record)."""
        return self.total_bytes + self.members * 4 * tarfile.BLOCKSIZE + 4 * tarfile.RECORDSIZE


DEFAULT_LIMITS = BundleLimits()
# Flat bundles of plain file names: no paths, no "." or "..", no separators of any system.
MEMBER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
GZIP_MAGIC = b"\x1f\x8b"


PrivateKeyLike = Ed25519PrivateKey | bytes | str
PublicKeyLike = Ed25519PublicKey | bytes | str
# One key, or a small set of trusted keys during a rotation (the signature's key id picks one).
TrustedKeysLike = PublicKeyLike | list[Ed25519PublicKey] | tuple[Ed25519PublicKey, ...]


def generate_keypair() -> tuple[bytes, bytes]:
    """A new signing key pair as (private PEM, public PEM)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def load_private_key(key: PrivateKeyLike) -> Ed25519PrivateKey:
    """From a key object, 32 raw bytes, PEM bytes/text, or a path to a PEM file."""
    if isinstance(key, Ed25519PrivateKey):
        return key
    data = _key_bytes(key)
    if len(data) == 32:
        return Ed25519PrivateKey.from_private_bytes(data)
    loaded = serialization.load_pem_private_key(data, password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise BundleError("the signing key is not an Ed25519 key")
    return loaded


def load_public_key(key: PublicKeyLike) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PublicKey):
        return key
    data = _key_bytes(key)
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    loaded = serialization.load_pem_public_key(data)
    if not isinstance(loaded, Ed25519PublicKey):
        raise BundleError("the verification key is not an Ed25519 key")
    return loaded


def _key_bytes(key: bytes | str) -> bytes:
    if isinstance(key, str):
        if key.lstrip().startswith("-----BEGIN"):
            return key.encode()
        return Path(key).read_bytes()
    return key


def key_id(public_key: PublicKeyLike) -> str:
    """Short fingerprint of a public key, recorded in signatures to tell a wrong key from a
    tampered manifest."""
    raw = load_public_key(public_key).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return hashlib.sha256(raw).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` with ``files`` set to the SHA-256 of every other file in the
    directory (the model files), and remove a stale signature."""
    directory = Path(directory)
    files = {
        p.name: sha256_file(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name not in (MANIFEST, SIGNATURE)
    }
    doc = {**manifest, "files": files}
    (directory / MANIFEST).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    (directory / SIGNATURE).unlink(missing_ok=True)
    return doc


def sign_bundle(directory: Path | str, private_key: PrivateKeyLike) -> Path:
    """Sign ``directory/manifest.json``; writes and returns ``manifest.sig``."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{directory} has no {MANIFEST}")
    key = load_private_key(private_key)
    signature = key.sign(manifest_path.read_bytes())
    doc = {
        "algorithm": SIGNATURE_ALGORITHM,
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(signature).decode(),
    }
    path = directory / SIGNATURE
    path.write_text(json.dumps(doc) + "\n")
    return path


def verify_bundle(
    bundle: Path | str, public_key: TrustedKeysLike, limits: BundleLimits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """Check a bundle directory or tar and return its manifest.

    Raises ``UnsignedBundleError`` without a signature, ``WrongKeyError`` when it was signed
    by another key, ``TamperedBundleError`` when the manifest or any file changed (or files
    were added or removed), ``OversizedBundleError`` past ``limits``, ``BundleError`` for
    anything else unreadable.
    """
    return _verify(_read_members(Path(bundle), limits), public_key, str(bundle))


def extract_bundle(
    archive: Path | str,
    destination: Path | str,
    public_key: TrustedKeysLike,
    limits: BundleLimits = DEFAULT_LIMITS,
) -> Path:
    """Verify a tar bundle and unpack it into ``destination`` (created); returns it."""
    members = _read_members(Path(archive), limits)
    _verify(members, public_key, str(archive))
    dest = Path(destination)
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in members.items():
        (dest / name).write_bytes(data)
    return dest


def pack_bundle(directory: Path | str, archive: Path | str) -> Path:
    """Tar (gzip when the name ends in .gz) the bundle files, flat, for transport."""
    directory, archive = Path(directory), Path(archive)
    with tarfile.open(archive, "w:gz" if archive.name.endswith(".gz") else "w") as tar:
        for path in sorted(directory.iterdir()):
            if path.is_file():
                tar.add(path, arcname=path.name)
    return archive


def _read_members(bundle: Path, limits: BundleLimits) -> dict[str, bytes]:
    if bundle.is_dir():
        return _read_directory(bundle, limits)
    if not bundle.is_file():
        raise BundleError(f"bundle {bundle} not found")
    try:
        return _read_tar(bundle, limits)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:  # OSError: gzip damage
        raise BundleError(f"{bundle} is neither a bundle directory nor a tar: {exc}") from None


def _read_directory(bundle: Path, limits: BundleLimits) -> dict[str, bytes]:
    files = [p for p in sorted(bundle.iterdir()) if p.is_file()]
    if len(files) > limits.members:
        raise OversizedBundleError(f"{bundle}: {len(files)} files, more than {limits.members}")
    members: dict[str, bytes] = {}
    total = 0
    for path in files:
        size = path.stat().st_size
        total += size
        _check_size(bundle, path.name, size, total, limits)
        members[path.name] = path.read_bytes()
    return members


def _read_tar(bundle: Path, limits: BundleLimits) -> dict[str, bytes]:
    """Stream the tar (plain or gzip) member by member; sizes are checked on each header,
    before its data is read."""
    members: dict[str, bytes] = {}
    total = 0
    entries = 0
    with bundle.open("rb") as raw:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        source: _ByteSource = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        capped = _CappedReader(source, limits.stream_bytes(), bundle)
        # "r|": a forward-only stream; nothing is scanned ahead of the member being checked.
        with tarfile.open(fileobj=capped, mode="r|") as tar:
            for info in tar:
                entries += 1
                if entries > limits.members:
                    raise OversizedBundleError(
                        f"{bundle}: more than {limits.members} archive members"
                    )
                if info.isdir():
                    continue
                name = info.name.removeprefix("./")
                # Flat bundles only: a path, a link or a device in the archive is not ours.
                if not info.isfile() or not MEMBER_NAME_RE.fullmatch(name) or name in members:
                    raise BundleError(f"unexpected archive member {info.name!r} in {bundle}")
                total += info.size
                _check_size(bundle, name, info.size, total, limits)
                fh = tar.extractfile(info)
                assert fh is not None  # a regular file always has a file object
                data = fh.read(info.size)
                if len(data) != info.size:
                    raise BundleError(f"{bundle}: member {name!r} is truncated")
                members[name] = data
    return members


def _check_size(bundle: Path, name: str, size: int, total: int, limits: BundleLimits) -> None:
    if size > limits.member_bytes:
        raise OversizedBundleError(
            f"{bundle}: member {name!r} declares {size} bytes, more than the "
            f"{limits.member_bytes}-byte limit per member"
        )
    if total > limits.total_bytes:
        raise OversizedBundleError(
            f"{bundle}: members add up to more than the {limits.total_bytes}-byte limit"
        )


class _ByteSource(Protocol):
    """What the capped reader needs of its source (a file or a GzipFile)."""

    def read(self, size: int = -1, /) -> bytes: ...


class _CappedReader(io.RawIOBase):
    """A read-only stream that refuses to yield more than ``cap`` bytes: what the tar reader
    consumes for headers (PAX, GNU long names) is bounded too, not only member data."""

    def __init__(self, source: _ByteSource, cap: int, bundle: Path) -> None:
        self._source = source
        self._left = cap
        self._cap = cap
        self._bundle = bundle

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        want = self._left + 1 if size is None or size < 0 else min(size, self._left + 1)
        data = self._source.read(want)
        self._left -= len(data)
        if self._left < 0:
            raise OversizedBundleError(
                f"{self._bundle}: the archive expands to more than {self._cap} bytes"
            )
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def signer_key_id(bundle: Path | str) -> str | None:
    """The key id a bundle directory's signature names (unverified: it only picks which
    trusted key to verify with), or None without a readable signature file."""
    try:
        doc = json.loads((Path(bundle) / SIGNATURE).read_text())
    except (OSError, ValueError):
        return None
    kid = doc.get("key_id") if isinstance(doc, dict) else None
    return kid if isinstance(kid, str) else None


def _verify(members: dict[str, bytes], public_key: TrustedKeysLike, where: str) -> dict[str, Any]:
    if MANIFEST not in members:
        raise BundleError(f"{where}: no {MANIFEST}")
    if SIGNATURE not in members:
        raise UnsignedBundleError(f"{where}: bundle is not signed (no {SIGNATURE})")
    try:
        sig_doc = json.loads(members[SIGNATURE])
        signature = base64.b64decode(sig_doc["signature"], validate=True)
        algorithm = sig_doc.get("algorithm")
    except (ValueError, KeyError, TypeError) as exc:
        raise TamperedBundleError(f"{where}: unreadable signature file ({exc})") from None
    if algorithm != SIGNATURE_ALGORITHM:
        raise BundleError(f"{where}: unsupported signature algorithm {algorithm!r}")
    candidates = list(public_key) if isinstance(public_key, list | tuple) else [public_key]
    ring = {key_id(k): k for k in (load_public_key(c) for c in candidates)}
    key = ring.get(sig_doc.get("key_id"))
    if key is None:
        trusted = ", ".join(repr(k) for k in sorted(ring))
        raise WrongKeyError(
            f"{where}: signed by key {sig_doc.get('key_id')!r}, but this edge trusts key {trusted}"
        )
    try:
        key.verify(signature, members[MANIFEST])
    except InvalidSignature:
        raise TamperedBundleError(
            f"{where}: manifest signature does not verify (manifest modified after signing)"
        ) from None
    try:
        manifest = json.loads(members[MANIFEST])
        files = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{where}: unreadable manifest ({exc})") from None
    for name, digest in files.items():
        if name not in members:
            raise TamperedBundleError(f"{where}: {name} is listed in the manifest but missing")
        if hashlib.sha256(members[name]).hexdigest() != digest:
            raise TamperedBundleError(f"{where}: {name} does not match its SHA-256 in the manifest")
    extra = set(members) - set(files) - {MANIFEST, SIGNATURE}
    if extra:
        raise TamperedBundleError(f"{where}: files not in the manifest: {', '.join(sorted(extra))}")
    return manifest
