"""Model statements: what the cloud approves a signed bundle for, signed apart from the bundle.

A bundle's own signature (``shared.model_bundle``) says only "built by our trainer". A
statement says "this bundle (``bundle_sha256``) is model ``model_id``, version ``version`` of
``machine_id``'s ``kind``, approved for service until ``expires_at``". The registry signs one
only for a model that passed validation (a refused candidate has none), and
``rig-cloud model rollback`` signs a *rollback* statement naming the version it returns to and
the version it replaces (``rollback_from``).

The edge checks a statement before it downloads anything (``verify_statement``) and refuses,
naming the field:

- ``machine_id`` / ``kind`` / ``model_id`` / ``bundle_sha256``: not the model it asked for;
- ``expires_at``: the approval ran out;
- ``version``: older than (or equal to, for another model) the version it runs, unless a
  rollback statement replaces at least the version it runs;
- ``issued_at``: issued before the statement of the model it runs (a replayed old statement).

Statements travel beside the bundle (in the model-info answer), so the bundle format is
unchanged. Trusted keys are a small set, found by ``key_id``, so the signing key can rotate:
edges trust the old and the new key, the cloud signs with the new one, then the old one goes.

Only ``cryptography`` and the standard library: the edge imports this.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.model_bundle import (
    SIGNATURE_ALGORITHM,
    BundleError,
    PrivateKeyLike,
    PublicKeyLike,
    key_id,
    load_private_key,
    load_public_key,
)

STATEMENT_FORMAT = 1
KINDS = ("detector", "rul")
PURPOSES = ("deploy", "rollback")
DEFAULT_VALIDITY = timedelta(days=365)
# A statement is a few hundred bytes; anything much bigger is not one.
MAX_STATEMENT_BYTES = 4096
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class StatementError(BundleError):
    """A statement that must not be acted on; the message names the offending field."""


@dataclass(frozen=True)
class Statement:
    machine_id: str
    kind: str
    model_id: int
    version: int
    bundle_sha256: str
    issued_at: datetime
    expires_at: datetime
    purpose: str = "deploy"
    # For a rollback: the version it takes out of service.
    rollback_from: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "format": STATEMENT_FORMAT,
            "machine_id": self.machine_id,
            "kind": self.kind,
            "model_id": self.model_id,
            "version": self.version,
            "bundle_sha256": self.bundle_sha256,
            "issued_at": self.issued_at.astimezone(UTC).isoformat(),
            "expires_at": self.expires_at.astimezone(UTC).isoformat(),
            "purpose": self.purpose,
            "rollback_from": self.rollback_from,
        }

    @classmethod
    def from_json(cls, doc: Any) -> Statement:
        if not isinstance(doc, dict):
            raise StatementError(f"statement: a {type(doc).__name__}, not an object")
        if doc.get("format") != STATEMENT_FORMAT:
            raise StatementError(f"format: {doc.get('format')!r} is not {STATEMENT_FORMAT}")
        machine_id = _field(doc, "machine_id", str)
        kind = _field(doc, "kind", str)
        if kind not in KINDS:
            raise StatementError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
        model_id = _positive(doc, "model_id")
        version = _positive(doc, "version")
        sha = _field(doc, "bundle_sha256", str)
        if not _SHA256_RE.fullmatch(sha):
            raise StatementError("bundle_sha256: not 64 lowercase hexadecimal digits")
        purpose = _field(doc, "purpose", str)
        if purpose not in PURPOSES:
            raise StatementError(f"purpose: {purpose!r} is not one of {', '.join(PURPOSES)}")
        rollback_from = doc.get("rollback_from")
        if purpose == "rollback":
            rollback_from = _positive(doc, "rollback_from")
            if rollback_from <= version:
                raise StatementError(
                    f"rollback_from: {rollback_from} is not newer than version {version}"
                )
        elif rollback_from is not None:
            raise StatementError("rollback_from: set on a deploy statement")
        return cls(
            machine_id=machine_id,
            kind=kind,
            model_id=model_id,
            version=version,
            bundle_sha256=sha,
            issued_at=_time(doc, "issued_at"),
            expires_at=_time(doc, "expires_at"),
            purpose=purpose,
            rollback_from=rollback_from,
        )


def _field(doc: dict[str, Any], name: str, kind: type) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind):
        raise StatementError(f"{name}: {value!r} is not a {kind.__name__}")
    return value


def _positive(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if type(value) is not int or not 1 <= value <= 2**63 - 1:  # bool is an int: refused
        raise StatementError(f"{name}: {value!r} is not a positive 64-bit integer")
    return value


def _time(doc: dict[str, Any], name: str) -> datetime:
    value = _field(doc, name, str)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise StatementError(f"{name}: {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise StatementError(f"{name}: {value!r} has no time zone")
    return parsed


def sign_statement(statement: Statement, private_key: PrivateKeyLike) -> dict[str, Any]:
    """The signed document served to edges: the statement's exact JSON text and an Ed25519
    signature over its bytes."""
    key = load_private_key(private_key)
    text = json.dumps(statement.as_json(), sort_keys=True, separators=(",", ":"))
    return {
        "statement": text,
        "algorithm": SIGNATURE_ALGORITHM,
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(text.encode())).decode(),
    }


def trusted_keys(keys: Iterable[PublicKeyLike]) -> dict[str, Ed25519PublicKey]:
    """Key id -> key, for a small set of trusted public keys."""
    loaded = [load_public_key(k) for k in keys]
    return {key_id(k): k for k in loaded}


@dataclass(frozen=True)
class Running:
    """What the edge runs now: the floor a new statement must clear."""

    model_id: int
    version: int
    issued_at: datetime


def open_statement(doc: Any, keys: dict[str, Ed25519PublicKey]) -> Statement:
    """Check the signature (by a trusted key id) and the fields; no policy."""
    if not isinstance(doc, dict):
        raise StatementError(f"statement: a {type(doc).__name__}, not an object")
    text, signature, kid = doc.get("statement"), doc.get("signature"), doc.get("key_id")
    if not isinstance(text, str) or len(text) > MAX_STATEMENT_BYTES:
        raise StatementError("statement: missing, not text or too long")
    if doc.get("algorithm") != SIGNATURE_ALGORITHM:
        raise StatementError(f"algorithm: {doc.get('algorithm')!r} is not {SIGNATURE_ALGORITHM}")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise StatementError(
            f"key_id: {kid!r} is not a trusted key (trusted: {', '.join(sorted(keys))})"
        )
    try:
        raw = base64.b64decode(str(signature), validate=True)
        key.verify(raw, text.encode())
    except (ValueError, InvalidSignature):
        raise StatementError(
            "signature: does not verify (statement modified after signing)"
        ) from None
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise StatementError(f"statement: not JSON ({exc})") from None
    return Statement.from_json(payload)


def verify_statement(
    doc: Any,
    keys: dict[str, Ed25519PublicKey],
    *,
    machine_id: str,
    kind: str,
    model_id: int,
    bundle_sha256: str,
    running: Running | None,
    now: datetime | None = None,
) -> Statement:
    """Accept a statement for the model the edge asked about, or raise ``StatementError``
    naming the field that refuses it."""
    st = open_statement(doc, keys)
    now = now or datetime.now(UTC)
    if st.machine_id != machine_id:
        raise StatementError(
            f"machine_id: the statement is for machine {st.machine_id!r}, not {machine_id!r}"
        )
    if st.kind != kind:
        raise StatementError(f"kind: the statement is for a {st.kind} model, not a {kind} one")
    if st.model_id != model_id:
        raise StatementError(f"model_id: the statement is for model {st.model_id}, not {model_id}")
    if st.bundle_sha256 != bundle_sha256:
        raise StatementError("bundle_sha256: the statement names another bundle")
    if st.expires_at <= now:
        raise StatementError(f"expires_at: the statement expired at {st.expires_at.isoformat()}")
    if running is None or running.model_id == st.model_id:
        return st
    if st.version <= running.version:
        if st.purpose != "rollback" or st.rollback_from is None:
            raise StatementError(
                f"version: {st.version} is not newer than version {running.version} in use "
                "(a downgrade needs a signed rollback statement)"
            )
        if st.rollback_from < running.version:
            raise StatementError(
                f"rollback_from: the rollback replaces version {st.rollback_from}, older than "
                f"version {running.version} in use"
            )
    if st.issued_at < running.issued_at:
        raise StatementError(
            f"issued_at: {st.issued_at.isoformat()} is before the statement of the model in "
            f"use ({running.issued_at.isoformat()}): a replayed statement"
        )
    return st
