"""The audit trail's hash chain, without a database: canonical form, row hashes, signed
checkpoints of the chain heads, and verification of a sequence of stored rows.

A row's content is a JSON object serialised canonically (keys sorted, no whitespace, UTF-8,
no NaN) — that text is stored as the row's ``body`` and hashed as is, so verification never
depends on how the database normalises JSON. ``hash = SHA-256(prev_hash || "\\n" || body)``
and ``body`` carries ``prev_hash`` and ``seq`` too: an edited, deleted, duplicated or moved row
breaks the chain at that row. Rewriting the whole chain consistently is caught by checkpoints:
statements of every chain's head (seq and hash) signed with an Ed25519 key the database does
not hold.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.model_bundle import PrivateKeyLike, PublicKeyLike, key_id, load_private_key
from shared.model_bundle import load_public_key as _load_public_key

FORMAT_VERSION = 1
GENESIS = "0" * 64
CATEGORIES = ("auth", "change", "export", "audit")
# The filter columns of audit_log that repeat a field of the body.
COLUMNS = ("category", "seq", "at", "actor", "action", "resource", "outcome", "ip")


class AuditFormatError(ValueError):
    """Content that has no canonical form (a NaN, a non-JSON value)."""


def _plain(value: Any, path: str) -> Any:
    """JSON-able copy of ``value``; refuses what has no single canonical spelling."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AuditFormatError(f"{path}: {value!r} has no canonical JSON form")
        return value
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(items)]
    if hasattr(value, "value") and isinstance(value.value, str):  # an Enum such as Role
        return value.value
    raise AuditFormatError(f"{path}: {type(value).__name__} is not JSON")


def canonical(content: Mapping[str, Any]) -> str:
    return json.dumps(
        _plain(content, "$"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def format_ts(ts: datetime) -> str:
    """UTC with microseconds, the precision PostgreSQL keeps."""
    if ts.tzinfo is None:
        raise AuditFormatError("timestamps must be timezone-aware")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    """What one audit row says, before it is placed in a chain."""

    category: str
    action: str
    resource: str
    actor: str | None = None
    role: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    source: str = "api"
    outcome: str = "ok"
    before: Any = None
    after: Any = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise AuditFormatError(f"category: {self.category!r} is not one of {CATEGORIES}")
        if not self.action or not self.resource:
            raise AuditFormatError("action and resource must not be empty")


def seal(entry: Entry, seq: int, at: datetime, prev_hash: str) -> dict[str, Any]:
    """The stored row for ``entry`` as row ``seq`` after ``prev_hash``."""
    content = {
        "v": FORMAT_VERSION,
        "category": entry.category,
        "seq": seq,
        "at": format_ts(at),
        "actor": entry.actor,
        "role": entry.role,
        "ip": entry.ip,
        "user_agent": entry.user_agent,
        "source": entry.source,
        "action": entry.action,
        "resource": entry.resource,
        "outcome": entry.outcome,
        "before": entry.before,
        "after": entry.after,
        "detail": dict(entry.detail),
        "prev_hash": prev_hash,
    }
    body = canonical(content)
    return {
        "category": entry.category,
        "seq": seq,
        "at": at,
        "actor": entry.actor,
        "action": entry.action,
        "resource": entry.resource,
        "outcome": entry.outcome,
        "ip": entry.ip,
        "body": body,
        "prev_hash": prev_hash,
        "hash": row_hash(prev_hash, body),
    }


@dataclass(frozen=True)
class Problem:
    """The first thing wrong with a chain: which row, and how."""

    category: str
    seq: int | None
    kind: str  # edited | deleted | inserted | rewritten | signature
    message: str

    def as_json(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "seq": self.seq,
            "kind": self.kind,
            "message": self.message,
        }


def _column_mismatch(row: Mapping[str, Any], content: Mapping[str, Any]) -> str | None:
    for name in COLUMNS:
        stored = row.get(name)
        if name == "at" and isinstance(stored, datetime):
            stored = format_ts(stored)
        if stored != content.get(name):
            return name
    return None


def verify_chain(
    category: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    base_seq: int = 0,
    base_hash: str = GENESIS,
    head: tuple[int, str] | None = None,
) -> tuple[int, str, Problem | None]:
    """Walk one category's rows in seq order. Returns (last seq, last hash, first problem).

    ``base_seq``/``base_hash``: where the chain starts (after retention dropped older months).
    ``head``: the chain head table's (seq, hash), which must be the last row.
    """
    expected_seq, prev = base_seq + 1, base_hash
    last_seq = base_seq
    for row in rows:
        seq = int(row["seq"])
        body = str(row["body"])
        try:
            content = json.loads(body)
        except ValueError:
            return last_seq, prev, Problem(category, seq, "edited", f"row {seq}: body is not JSON")
        if row_hash(str(row["prev_hash"]), body) != row["hash"]:
            return (
                last_seq,
                prev,
                Problem(category, seq, "edited", f"row {seq}: content does not match its hash"),
            )
        column = _column_mismatch(row, content) or (
            "prev_hash" if content.get("prev_hash") != row["prev_hash"] else None
        )
        if column is not None:
            return (
                last_seq,
                prev,
                Problem(
                    category,
                    seq,
                    "edited",
                    f"row {seq}: column {column} differs from the hashed body",
                ),
            )
        if seq > expected_seq and row["prev_hash"] != prev:
            missing = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}-{seq - 1}"
            return (
                last_seq,
                prev,
                Problem(
                    category, expected_seq, "deleted", f"row(s) {missing} missing before row {seq}"
                ),
            )
        if seq != expected_seq or row["prev_hash"] != prev:
            return (
                last_seq,
                prev,
                Problem(
                    category,
                    seq,
                    "inserted",
                    f"row {seq} does not follow row {expected_seq - 1} (inserted or out of order)",
                ),
            )
        expected_seq, prev, last_seq = seq + 1, str(row["hash"]), seq
    if head is not None:
        head_seq, head_hash = head
        if head_seq > last_seq:
            missing = (
                f"{last_seq + 1}" if head_seq == last_seq + 1 else f"{last_seq + 1}-{head_seq}"
            )
            return (
                last_seq,
                prev,
                Problem(category, last_seq + 1, "deleted", f"row(s) {missing} missing at the end"),
            )
        if head_seq != last_seq or head_hash != prev:
            return (
                last_seq,
                prev,
                Problem(
                    category,
                    last_seq,
                    "inserted",
                    f"row {last_seq} is past the chain head {head_seq} (appended outside the API)",
                ),
            )
    return last_seq, prev, None


# -- checkpoints --------------------------------------------------------------------------


def statement(heads: Mapping[str, tuple[int, str]], at: datetime) -> str:
    """The signed text: every chain's head at ``at``."""
    return canonical(
        {
            "v": FORMAT_VERSION,
            "at": format_ts(at),
            "heads": {c: {"seq": s, "hash": h} for c, (s, h) in sorted(heads.items())},
        }
    )


@dataclass(frozen=True)
class Checkpoint:
    statement: str
    key_id: str
    signature: str  # base64

    def heads(self) -> dict[str, tuple[int, str]]:
        doc = json.loads(self.statement)
        return {c: (int(h["seq"]), str(h["hash"])) for c, h in doc["heads"].items()}

    def at(self) -> str:
        return str(json.loads(self.statement)["at"])

    def as_json(self) -> dict[str, str]:
        return {"statement": self.statement, "key_id": self.key_id, "signature": self.signature}


def sign(heads: Mapping[str, tuple[int, str]], at: datetime, key: PrivateKeyLike) -> Checkpoint:
    private: Ed25519PrivateKey = load_private_key(key)
    text = statement(heads, at)
    return Checkpoint(
        statement=text,
        key_id=key_id(private.public_key()),
        signature=base64.b64encode(private.sign(text.encode())).decode(),
    )


def load_public_key(key: PublicKeyLike) -> Ed25519PublicKey:
    return _load_public_key(key)


def signature_valid(checkpoint: Checkpoint, public: Ed25519PublicKey) -> bool:
    try:
        public.verify(base64.b64decode(checkpoint.signature), checkpoint.statement.encode())
    except (InvalidSignature, ValueError):
        return False
    return True
