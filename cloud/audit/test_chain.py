"""Canonical form, row hashes, checkpoints and chain verification, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag

from cloud.audit import sealing
from cloud.audit.chain import (
    GENESIS,
    AuditFormatError,
    Entry,
    canonical,
    row_hash,
    seal,
    sign,
    signature_valid,
    verify_chain,
)
from cloud.audit.settings import AuditSettingsError, parse_retention
from shared.model_bundle import generate_keypair, load_private_key, load_public_key

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _chain(n: int) -> list[dict[str, Any]]:
    rows, prev = [], GENESIS
    for i in range(1, n + 1):
        entry = Entry("change", "threshold.set", f"threshold:A/rpm{i}", actor="ada", after={"v": i})
        row = seal(entry, i, T0 + timedelta(seconds=i), prev)
        rows.append(row)
        prev = row["hash"]
    return rows


def test_canonical_form_is_key_order_and_whitespace_free() -> None:
    assert canonical({"b": 1, "a": [1.5, "µ"], "c": None}) == '{"a":[1.5,"µ"],"b":1,"c":null}'
    assert canonical({"x": {"z": 1, "y": 2}}) == canonical({"x": {"y": 2, "z": 1}})
    with pytest.raises(AuditFormatError, match=r"\$\.x"):
        canonical({"x": float("nan")})
    with pytest.raises(AuditFormatError):
        canonical({"x": object()})


def test_row_hash_chains_the_previous_hash() -> None:
    rows = _chain(2)
    assert rows[0]["prev_hash"] == GENESIS
    assert rows[1]["prev_hash"] == rows[0]["hash"]
    assert rows[1]["hash"] == row_hash(rows[0]["hash"], rows[1]["body"])
    assert '"seq":2' in rows[1]["body"] and rows[0]["hash"] in rows[1]["body"]


def test_intact_chain_verifies() -> None:
    rows = _chain(4)
    last, head, problem = verify_chain("change", rows, head=(4, rows[-1]["hash"]))
    assert (last, head, problem) == (4, rows[-1]["hash"], None)


def test_edited_body_and_edited_column_are_reported_with_the_row() -> None:
    rows = _chain(4)
    rows[1] = {**rows[1], "body": rows[1]["body"].replace('"v":2', '"v":9')}
    problem = verify_chain("change", rows)[2]
    assert problem is not None and (problem.seq, problem.kind) == (2, "edited")
    rows = _chain(4)
    rows[2] = {**rows[2], "actor": "mallory"}
    problem = verify_chain("change", rows)[2]
    assert problem is not None and (problem.seq, problem.kind) == (3, "edited")
    assert "actor" in problem.message


def test_deleted_rows_in_the_middle_and_at_the_end() -> None:
    rows = _chain(5)
    problem = verify_chain("change", rows[:2] + rows[3:])[2]
    assert problem is not None and (problem.seq, problem.kind) == (3, "deleted")
    problem = verify_chain("change", rows[:3], head=(5, rows[-1]["hash"]))[2]
    assert problem is not None and (problem.seq, problem.kind) == (4, "deleted")


def test_inserted_and_reordered_rows() -> None:
    rows = _chain(4)
    # A well-formed row forged after row 2 (it cannot also fit before row 3).
    forged = seal(Entry("change", "user.delete", "user:bob"), 3, T0, rows[1]["hash"])
    problem = verify_chain("change", [*rows[:2], forged, *rows[2:]])[2]
    assert problem is not None and (problem.seq, problem.kind) == (3, "inserted")
    problem = verify_chain("change", [rows[0], rows[2], rows[1], rows[3]])[2]
    assert problem is not None and problem.seq == 2  # the first row out of place
    # Appended past the head outside the API.
    extra = seal(Entry("change", "user.delete", "user:bob"), 5, T0, rows[-1]["hash"])
    problem = verify_chain("change", [*rows, extra], head=(4, rows[-1]["hash"]))[2]
    assert problem is not None and problem.kind == "inserted"


def test_checkpoint_signature_detects_a_rewritten_statement() -> None:
    private, public = generate_keypair()
    checkpoint = sign({"change": (4, "ab" * 32)}, T0, private)
    assert signature_valid(checkpoint, load_public_key(public))
    assert checkpoint.heads() == {"change": (4, "ab" * 32)}
    forged = type(checkpoint)(
        checkpoint.statement.replace('"seq":4', '"seq":3'), checkpoint.key_id, checkpoint.signature
    )
    assert not signature_valid(forged, load_public_key(public))
    other = load_private_key(generate_keypair()[0]).public_key()
    assert not signature_valid(checkpoint, other)


def test_sealed_detail_round_trips_and_is_redacted_without_a_key() -> None:
    key = bytes(range(32))
    sealed = sealing.seal({"username": "adm1n-typo"}, key, "auth.login")
    assert sealed["enc"] == "A256GCM" and "adm1n" not in canonical(sealed)
    assert sealing.unseal(sealed, key, "auth.login") == {"username": "adm1n-typo"}
    with pytest.raises(InvalidTag):
        sealing.unseal(sealed, key, "user.create")  # bound to its action
    assert sealing.seal("x", None, "auth.login") == {"redacted": True}


def test_retention_setting_names_the_offending_category() -> None:
    assert parse_retention("auth=3")["auth"] == 3
    with pytest.raises(AuditSettingsError, match="nope"):
        parse_retention("nope=3")
    with pytest.raises(AuditSettingsError, match="auth"):
        parse_retention("auth=x")
