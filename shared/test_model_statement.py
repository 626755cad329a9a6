"""Model statements: signed, checked field by field, each refusal naming its field."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.model_bundle import generate_keypair
from shared.model_statement import (
    Running,
    Statement,
    StatementError,
    sign_statement,
    trusted_keys,
    verify_statement,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SHA = "ab" * 32


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes, bytes, bytes]:
    return (*generate_keypair(), *generate_keypair())


def _statement(**changes: Any) -> Statement:
    base = Statement(
        machine_id="M1",
        kind="detector",
        model_id=7,
        version=3,
        bundle_sha256=SHA,
        issued_at=NOW - timedelta(days=1),
        expires_at=NOW + timedelta(days=364),
    )
    return replace(base, **changes)


def _verify(doc: Any, public: bytes | list[bytes], running: Running | None = None, **kw: Any):
    ring = trusted_keys(public if isinstance(public, list) else [public])
    args = {"machine_id": "M1", "kind": "detector", "model_id": 7, "bundle_sha256": SHA}
    return verify_statement(doc, ring, running=running, now=NOW, **{**args, **kw})


def test_signed_statement_verifies_and_round_trips(keys: tuple[bytes, ...]) -> None:
    private, public = keys[0], keys[1]
    st = _statement()
    assert _verify(sign_statement(st, private), public) == st


def test_either_of_two_trusted_keys_verifies_for_rotation(keys: tuple[bytes, ...]) -> None:
    old_private, old_public, new_private, new_public = keys
    ring = [old_public, new_public]
    assert _verify(sign_statement(_statement(), old_private), ring).model_id == 7
    assert _verify(sign_statement(_statement(), new_private), ring).model_id == 7
    with pytest.raises(StatementError, match=r"^key_id: "):
        _verify(sign_statement(_statement(), new_private), old_public)


def test_edited_statement_is_refused(keys: tuple[bytes, ...]) -> None:
    doc = sign_statement(_statement(), keys[0])
    payload = json.loads(doc["statement"])
    payload["machine_id"] = "M2"
    doc["statement"] = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    with pytest.raises(StatementError, match=r"^signature: "):
        _verify(doc, keys[1], machine_id="M2")


@pytest.mark.parametrize(
    ("asked", "field"),
    [
        ({"machine_id": "M2"}, "machine_id"),
        ({"kind": "rul"}, "kind"),
        ({"model_id": 8}, "model_id"),
        ({"bundle_sha256": "cd" * 32}, "bundle_sha256"),
    ],
)
def test_statement_for_another_model_is_refused(
    keys: tuple[bytes, ...], asked: dict[str, Any], field: str
) -> None:
    with pytest.raises(StatementError, match=f"^{field}: "):
        _verify(sign_statement(_statement(), keys[0]), keys[1], **asked)


def test_expired_statement_is_refused(keys: tuple[bytes, ...]) -> None:
    doc = sign_statement(_statement(expires_at=NOW - timedelta(seconds=1)), keys[0])
    with pytest.raises(StatementError, match=r"^expires_at: "):
        _verify(doc, keys[1])


def test_downgrade_is_refused_and_upgrade_accepted(keys: tuple[bytes, ...]) -> None:
    running = Running(model_id=9, version=4, issued_at=NOW - timedelta(days=2))
    with pytest.raises(StatementError, match=r"^version: 3 is not newer than version 4"):
        _verify(sign_statement(_statement(), keys[0]), keys[1], running)
    newer = _statement(version=5)
    assert _verify(sign_statement(newer, keys[0]), keys[1], running).version == 5


def test_signed_rollback_allows_the_older_version(keys: tuple[bytes, ...]) -> None:
    running = Running(model_id=9, version=4, issued_at=NOW - timedelta(days=2))
    rollback = _statement(purpose="rollback", rollback_from=4)
    assert _verify(sign_statement(rollback, keys[0]), keys[1], running).version == 3


def test_stale_rollback_and_replayed_statement_are_refused(keys: tuple[bytes, ...]) -> None:
    running = Running(model_id=9, version=6, issued_at=NOW - timedelta(days=2))
    stale = _statement(purpose="rollback", rollback_from=4)
    with pytest.raises(StatementError, match=r"^rollback_from: "):
        _verify(sign_statement(stale, keys[0]), keys[1], running)
    older = _statement(version=8, issued_at=NOW - timedelta(days=3))
    with pytest.raises(StatementError, match=r"^issued_at: "):
        _verify(sign_statement(older, keys[0]), keys[1], running)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ("text", "statement"),
        ({"statement": "{}", "algorithm": "rsa"}, "algorithm"),
        ({"statement": "{}", "algorithm": "ed25519", "key_id": "x"}, "key_id"),
    ],
)
def test_malformed_documents_name_their_field(
    keys: tuple[bytes, ...], doc: Any, field: str
) -> None:
    with pytest.raises(StatementError, match=f"^{field}: "):
        _verify(doc, keys[1])
