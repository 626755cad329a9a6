"""Model bundles: what the cloud trains and the edge runs, and how the edge knows it is
genuine.

A bundle is a directory (or a tar of one, optionally gzipped) holding ``manifest.json``, the
model files it lists with their SHA-256 under ``files``, and ``manifest.sig``: an Ed25519
signature over the exact bytes of ``manifest.json``. Signing the manifest covers every file
through its hash. ``verify_bundle`` accepts a bundle only if the signature verifies with the
given public key, every listed file is present with its hash, and nothing else is there.

Only ``cryptography`` and the standard library: the edge imports this, and must not pull
TensorFlow or scikit-learn.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

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


PrivateKeyLike = Ed25519PrivateKey | bytes | str
PublicKeyLike = Ed25519PublicKey | bytes | str


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


def verify_bundle(bundle: Path | str, public_key: PublicKeyLike) -> dict[str, Any]:
    """Check a bundle directory or tar and return its manifest.

    Raises ``UnsignedBundleError`` without a signature, ``WrongKeyError`` when it was signed
    by another key, ``TamperedBundleError`` when the manifest or any file changed (or files
    were added or removed), ``BundleError`` for anything else unreadable.
    """
    return _verify(_read_members(Path(bundle)), public_key, str(bundle))


def extract_bundle(archive: Path | str, destination: Path | str, public_key: PublicKeyLike) -> Path:
    """Verify a tar bundle and unpack it into ``destination`` (created); returns it."""
    members = _read_members(Path(archive))
    _verify(members, public_key, str(archive))
    dest = Path(destination)
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in members.items():
        (dest / name).write_bytes(data)
    return dest


def pack_bundle(directory: Path | str, archive: Path | str) -> Path:
    """Tar (gzip when the name ends in .gz) the bundle files, flat, for transport."""
    directory, archive = Path(directory), Path(archive)
    mode = "w:gz" if archive.name.endswith(".gz") else "w"
    with tarfile.open(archive, mode) as tar:
        for path in sorted(directory.iterdir()):
            if path.is_file():
                tar.add(path, arcname=path.name)
    return archive


def _read_members(bundle: Path) -> dict[str, bytes]:
    if bundle.is_dir():
        return {p.name: p.read_bytes() for p in sorted(bundle.iterdir()) if p.is_file()}
    if not bundle.is_file():
        raise BundleError(f"bundle {bundle} not found")
    try:
        with tarfile.open(bundle, "r:*") as tar:
            members: dict[str, bytes] = {}
            for info in tar.getmembers():
                if info.isdir():
                    continue
                name = Path(info.name).name
                # Flat bundles only: a path, a link or a device in the archive is not ours.
                if not info.isfile() or name != info.name.removeprefix("./") or name in members:
                    raise BundleError(f"unexpected archive member {info.name!r} in {bundle}")
                fh = tar.extractfile(info)
                assert fh is not None
                members[name] = fh.read()
            return members
    except (tarfile.TarError, EOFError, OSError) as exc:  # OSError: gzip damage
        raise BundleError(f"{bundle} is neither a bundle directory nor a tar: {exc}") from None


def _verify(members: dict[str, bytes], public_key: PublicKeyLike, where: str) -> dict[str, Any]:
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
    key = load_public_key(public_key)
    expected_id = key_id(key)
    if sig_doc.get("key_id") != expected_id:
        raise WrongKeyError(
            f"{where}: signed by key {sig_doc.get('key_id')!r}, but this edge trusts key "
            f"{expected_id!r}"
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
