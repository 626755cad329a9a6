"""The audit trail in a real (embedded) PostgreSQL: concurrent appends stay one linear chain;
editing, deleting or inserting a row, or rewriting the whole chain, is reported with the row by
``rig-cloud audit verify``; the API's role cannot change rows; retention drops a month and
the chain still verifies (and moving its start by hand does not)."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from cloud.audit import store
from cloud.audit.chain import GENESIS, Entry, seal
from cloud.cli import main as rig_cloud
from shared.model_bundle import generate_keypair

pytestmark = pytest.mark.integration


def _append(url: str, n: int, who: str) -> None:
    for i in range(n):
        with psycopg.connect(url) as conn, conn.transaction():
            store.append(
                conn,
                Entry("change", "threshold.set", f"threshold:A/rpm-{who}-{i}", actor=who),
            )


def _tamper(url: str, statement: str, *args: Any) -> None:
    # As an attacker with the database's superuser: row triggers switched off.
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(statement, args)


def _verify(capsys: pytest.CaptureFixture[str], url: str, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = rig_cloud(["audit", "verify", *extra])
    return code, capsys.readouterr().out


@pytest.fixture
def chain(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, Path, Path]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    private, public = generate_keypair()
    (tmp_path / "audit.key").write_bytes(private)
    (tmp_path / "audit.pub").write_bytes(public)
    # Two writers at once: the head lock keeps one linear chain.
    writers = [threading.Thread(target=_append, args=(database_url, 6, w)) for w in ("ada", "bo")]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    return database_url, tmp_path / "audit.key", tmp_path / "audit.pub"


def test_tampering_in_each_way_is_reported_with_the_row(
    chain: tuple[str, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, key, pub = chain
    checkpoints = tmp_path / "checkpoints.jsonl"
    assert (
        rig_cloud(["audit", "sign", "--key", str(key), "--checkpoint-file", str(checkpoints)]) == 0
    )
    keys = ("--public-key", str(pub), "--checkpoint-file", str(checkpoints))
    code, out = _verify(capsys, url, *keys)
    assert (code, out.startswith("audit trail intact: rows auth 0, change 12")) == (0, True), out
    assert "1 signed checkpoint(s) hold" in out

    with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        original = cur.execute(
            "SELECT * FROM audit_log WHERE category = 'change' AND seq = 5"
        ).fetchone()
    assert original is not None

    # 1. Edited: the actor in the body changed.
    _tamper(
        url,
        "UPDATE audit_log SET body = replace(body, %s, %s) WHERE category = 'change' AND seq = 5",
        '"actor":"',
        '"actor":"x',
    )
    code, out = _verify(capsys, url, *keys)
    assert code == 1 and "change row 5 edited" in out, out
    _tamper(
        url,
        "UPDATE audit_log SET body = %s WHERE category = 'change' AND seq = 5",
        original["body"],
    )
    assert _verify(capsys, url, *keys)[0] == 0

    # 2. Deleted.
    _tamper(url, "DELETE FROM audit_log WHERE category = 'change' AND seq = 5")
    code, out = _verify(capsys, url, *keys)
    assert code == 1 and "change row 5 deleted" in out, out
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(store._INSERT, original)
    assert _verify(capsys, url, *keys)[0] == 0

    # 3. Inserted out of order: a well-formed row squeezed in after row 3.
    with psycopg.connect(url) as conn:
        row3 = conn.execute(
            "SELECT hash, at FROM audit_log WHERE category = 'change' AND seq = 3"
        ).fetchone()
    assert row3 is not None
    forged = seal(Entry("change", "user.delete", "user:auditor", actor="ada"), 4, row3[1], row3[0])
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(store._INSERT, forged)
    code, out = _verify(capsys, url, *keys)
    assert code == 1 and "change row 4 inserted" in out, out
    _tamper(url, "DELETE FROM audit_log WHERE hash = %s", forged["hash"])
    assert _verify(capsys, url, *keys)[0] == 0

    # 4. The whole chain rewritten consistently (hashes recomputed, head moved): only the
    # signed checkpoint can tell.
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        rows = conn.execute(
            "SELECT seq, at FROM audit_log WHERE category = 'change' ORDER BY seq"
        ).fetchall()
        conn.execute("DELETE FROM audit_log WHERE category = 'change'")
        prev = GENESIS
        for seq, at in rows:
            row = seal(
                Entry("change", "threshold.set", "threshold:A/rpm", actor="mallory"), seq, at, prev
            )
            conn.execute(store._INSERT, row)
            prev = row["hash"]
        conn.execute("UPDATE audit_chain_head SET hash = %s WHERE category = 'change'", (prev,))
    assert _verify(capsys, url)[0] == 0  # without the key the rewrite is invisible ...
    code, out = _verify(capsys, url, *keys)  # ... with it, it is not
    assert code == 1 and "rewritten" in out and "change row 12" in out, out
    # Deleting the signed checkpoints too is caught by the copy outside the database.
    _tamper(url, "DELETE FROM audit_checkpoints")
    code, out = _verify(capsys, url, *keys)
    assert code == 1 and "in the file but not the database" in out, out


def test_the_api_role_cannot_change_or_delete_rows(database_url: str) -> None:
    with psycopg.connect(database_url) as conn, conn.transaction():
        store.append(conn, Entry("auth", "auth.login", "user:ada", actor="ada"))
    role = f"rig_api_{datetime.now(UTC).strftime('%H%M%S%f')}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        # Even a careless grant of everything does not let it rewrite history.
        conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
    as_api = database_url.replace("postgres@", f"{role}@")
    try:
        for statement in (
            "UPDATE audit_log SET actor = 'x'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with (
                psycopg.connect(as_api) as conn,
                pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"),
            ):
                conn.execute(statement)
        with psycopg.connect(as_api) as conn, conn.transaction():  # appending is allowed
            store.append(conn, Entry("auth", "auth.logout", "user:ada", actor="ada"))
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_retention_drops_a_whole_month_recorded_and_the_chain_still_verifies(
    database_url: str,
) -> None:
    old = datetime(2020, 1, 15, tzinfo=UTC)
    with psycopg.connect(database_url) as conn, conn.transaction():
        assert store.ensure_partitions(conn, 0) == 0
        conn.execute("SELECT audit_ensure_partitions('2020-01-01', 1)")
        prev = GENESIS
        for seq in (1, 2):  # two login rows from January 2020, as the API would have written
            row = seal(Entry("auth", "auth.login", "user:ada", actor="ada"), seq, old, prev)
            conn.execute(store._INSERT, row)
            prev = row["hash"]
        conn.execute(
            "UPDATE audit_chain_head SET seq = 2, hash = %s WHERE category = 'auth'", (prev,)
        )
        store.append(conn, Entry("auth", "auth.login", "user:ada", actor="ada"))
    with psycopg.connect(database_url) as conn, conn.transaction():
        assert store.verify(conn)["ok"]
        dropped = store.drop_expired(conn, {"auth": 13}, today=date(2026, 11, 29))
        assert dropped == ["audit_log_auth_202001"]
    with psycopg.connect(database_url) as conn, conn.transaction():
        report = store.verify(conn)
        assert report["ok"], report
        assert report["chains"]["auth"] == {"rows": 1, "head_seq": 3, "base_seq": 2}
        (drop,) = store.query(conn, store.Filters(action="audit.retention_drop"))
        assert drop["detail"]["first_seq"] == 1 and drop["detail"]["last_seq"] == 2
    # Moving the start by hand would hide rows: refused by verification.
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute("UPDATE audit_chain_head SET base_seq = 3 WHERE category = 'auth'")
        assert store.verify(conn)["problem"]["kind"] == "deleted"


def test_cli_changes_maintain_and_the_hourly_signer(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cloud.cli_audit import maintain, start_signer
    from tests.support.processes import wait_until

    monkeypatch.setenv("DATABASE_URL", database_url)
    (tmp_path / "pw").write_text("a-long-enough-password\n")
    assert (
        rig_cloud(
            ["user", "add", "zed", "--role", "viewer", "--password-file", str(tmp_path / "pw")]
        )
        == 0
    )
    assert rig_cloud(["edge-key", "create", "rig-9"]) == 0
    key = capsys.readouterr().out.split('"api_key": "')[1].split('"')[0]
    with psycopg.connect(database_url) as conn:
        rows = store.query(conn, store.Filters(category="change"))
    by_action = {r["action"]: r for r in rows}
    assert by_action["user.create"]["actor"].startswith("cli:")
    assert by_action["user.create"]["source"] == "cli"
    assert by_action["edge_key.create"]["after"]["api_key"] == "[redacted]"
    assert key not in str(rows)  # the new key never enters the trail

    private, _public = generate_keypair()
    (tmp_path / "audit.key").write_bytes(private)
    monkeypatch.setenv("RIG_AUDIT_SIGNING_KEY_FILE", str(tmp_path / "audit.key"))
    monkeypatch.setenv("RIG_AUDIT_CHECKPOINT_FILE", str(tmp_path / "cp.jsonl"))
    result = maintain(database_url)
    assert result["dropped"] == [] and result["signed_with"]
    signer = start_signer(database_url)
    assert signer is not None
    try:

        def signed_twice() -> bool:
            with psycopg.connect(database_url) as conn:
                row = conn.execute("SELECT count(*) FROM audit_checkpoints").fetchone()
            return row is not None and row[0] >= 2

        wait_until(signed_twice, 30, "the signer's first checkpoint")
    finally:
        signer.stop()
    assert len((tmp_path / "cp.jsonl").read_text().splitlines()) >= 2
