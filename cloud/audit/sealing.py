"""Sensitive detail fields encrypted with AES-256-GCM (key from a file). The ciphertext is
what the chain hashes, so verification needs no key; reading the field back does."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ALGORITHM = "A256GCM"


class DetailKeyError(ValueError):
    pass


def load_key(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) == 32:
        return data
    try:
        decoded = base64.b64decode(data.strip(), validate=True)
    except ValueError:
        decoded = b""
    if len(decoded) != 32:
        raise DetailKeyError(
            f"RIG_AUDIT_DETAIL_KEY_FILE {path}: expected 32 raw bytes or their base64"
        )
    return decoded


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"rig-audit-detail\n" + key).hexdigest()[:16]


def seal(value: Any, key: bytes | None, aad: str) -> dict[str, Any]:
    """``value`` encrypted (``aad``: the action, so a sealed field cannot be moved to another
    kind of row), or a redaction marker without a key."""
    if key is None:
        return {"redacted": True}
    nonce = os.urandom(12)
    plain = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    ct = AESGCM(key).encrypt(nonce, plain, aad.encode())
    return {
        "enc": ALGORITHM,
        "kid": key_id(key),
        "nonce": base64.b64encode(nonce).decode(),
        "ct": base64.b64encode(ct).decode(),
    }


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and value.get("enc") == ALGORITHM


def unseal(value: dict[str, Any], key: bytes, aad: str) -> Any:
    if value.get("kid") != key_id(key):
        raise DetailKeyError(f"sealed with key {value.get('kid')}, not {key_id(key)}")
    plain = AESGCM(key).decrypt(
        base64.b64decode(value["nonce"]), base64.b64decode(value["ct"]), aad.encode()
    )
    return json.loads(plain)
