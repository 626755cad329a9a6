"""Where the audit trail's keys and policies come from (environment, read once per process).

- RIG_AUDIT_SIGNING_KEY_FILE: Ed25519 private key (PEM, as ``rig-cloud audit keygen`` or
  ``rig-cloud model keygen`` writes) that signs the chain heads; never stored in the database.
- RIG_AUDIT_VERIFY_KEY_FILE: its public key, for verification (defaults to the public half of
  the signing key when only that is configured).
- RIG_AUDIT_CHECKPOINT_FILE: a JSON-lines file every checkpoint is also appended to, outside
  the database (someone who rewrites the database cannot rewrite it too).
- RIG_AUDIT_DETAIL_KEY_FILE: 32-byte AES-256-GCM key (raw or base64) for sensitive detail
  fields; without it they are redacted, never stored in clear.
- RIG_AUDIT_RETENTION_MONTHS: per category, e.g. ``auth=13,change=84,export=24,audit=0``
  (0: keep for ever).
- RIG_AUDIT_SIGN_INTERVAL_S: how often ``rig-cloud serve`` signs the heads (3600).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from cloud.audit.chain import CATEGORIES

DEFAULT_RETENTION_MONTHS: dict[str, int] = {"auth": 13, "change": 84, "export": 24, "audit": 0}


class AuditSettingsError(ValueError):
    pass


def _path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value) if value else None


def parse_retention(text: str) -> dict[str, int]:
    result = dict(DEFAULT_RETENTION_MONTHS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        category, _, months = part.partition("=")
        category = category.strip()
        if category not in CATEGORIES:
            raise AuditSettingsError(
                f"RIG_AUDIT_RETENTION_MONTHS: unknown category {category!r} "
                f"({', '.join(CATEGORIES)})"
            )
        try:
            value = int(months)
        except ValueError:
            raise AuditSettingsError(
                f"RIG_AUDIT_RETENTION_MONTHS: {category}={months!r} is not a number of months"
            ) from None
        if value < 0:
            raise AuditSettingsError(f"RIG_AUDIT_RETENTION_MONTHS: {category} must be >= 0")
        result[category] = value
    return result


@dataclass(frozen=True)
class AuditSettings:
    signing_key_file: Path | None = None
    verify_key_file: Path | None = None
    checkpoint_file: Path | None = None
    detail_key_file: Path | None = None
    retention_months: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_RETENTION_MONTHS))
    sign_interval_s: float = 3600.0

    @classmethod
    def from_env(cls) -> AuditSettings:
        interval = os.environ.get("RIG_AUDIT_SIGN_INTERVAL_S", "3600")
        try:
            sign_interval = float(interval)
        except ValueError:
            raise AuditSettingsError(
                f"RIG_AUDIT_SIGN_INTERVAL_S: {interval!r} is not a number"
            ) from None
        return cls(
            signing_key_file=_path("RIG_AUDIT_SIGNING_KEY_FILE"),
            verify_key_file=_path("RIG_AUDIT_VERIFY_KEY_FILE"),
            checkpoint_file=_path("RIG_AUDIT_CHECKPOINT_FILE"),
            detail_key_file=_path("RIG_AUDIT_DETAIL_KEY_FILE"),
            retention_months=parse_retention(os.environ.get("RIG_AUDIT_RETENTION_MONTHS", "")),
            sign_interval_s=max(1.0, sign_interval),
        )


@lru_cache(maxsize=1)
def current() -> AuditSettings:
    return AuditSettings.from_env()
