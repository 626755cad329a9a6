"""The audit trail in PostgreSQL (migration 0018): append in the caller's transaction, query
for the viewer and exports, verify, sign the chain heads, drop months past retention."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg import sql
from psycopg.rows import dict_row

from cloud.audit import sealing
from cloud.audit.chain import (
    CATEGORIES,
    Checkpoint,
    Entry,
    Problem,
    load_public_key,
    seal,
    sign,
    signature_valid,
    verify_chain,
)
from cloud.audit.settings import AuditSettings, current
from shared.logs import log_event
from shared.model_bundle import PrivateKeyLike, key_id

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_INSERT = (
    "INSERT INTO audit_log (category, seq, at, actor, action, resource, outcome, ip, body,"
    " prev_hash, hash) VALUES (%(category)s, %(seq)s, %(at)s, %(actor)s, %(action)s,"
    " %(resource)s, %(outcome)s, %(ip)s, %(body)s, %(prev_hash)s, %(hash)s)"
)


def _detail_key(settings: AuditSettings) -> bytes | None:
    path = settings.detail_key_file
    return sealing.load_key(path) if path is not None else None


def append(
    conn: psycopg.Connection,
    entry: Entry,
    *,
    sensitive: Mapping[str, Any] | None = None,
    settings: AuditSettings | None = None,
) -> dict[str, Any]:
    """Append ``entry`` to its category's chain in ``conn``'s current transaction (so it
    commits or rolls back with the action it records). ``sensitive`` fields go into the
    detail encrypted (or redacted without a key)."""
    if sensitive:
        key = _detail_key(settings or current())
        detail = dict(entry.detail)
        for name, value in sensitive.items():
            detail[name] = sealing.seal(value, key, entry.action)
        entry = Entry(**{**entry.__dict__, "detail": detail})
    # The head row stays locked until this transaction ends: appends to one chain are
    # serialised, and seq order is commit order.
    head = conn.execute(
        "SELECT seq, hash FROM audit_chain_head WHERE category = %s FOR UPDATE",
        (entry.category,),
    ).fetchone()
    if head is None:
        raise RuntimeError(f"audit_chain_head has no row for {entry.category!r} (migration 0018)")
    # The database clock, read after the lock: times never go backwards along a chain.
    (now,) = conn.execute("SELECT clock_timestamp()").fetchone() or (datetime.now(UTC),)
    row = seal(entry, int(head[0]) + 1, now, str(head[1]))
    conn.execute(_INSERT, row)
    conn.execute(
        "UPDATE audit_chain_head SET seq = %s, hash = %s WHERE category = %s",
        (row["seq"], row["hash"], entry.category),
    )
    return row


def wrap(
    entry: Entry,
    work: Callable[Concatenate[psycopg.Connection, P], T],
    *,
    before: Callable[[psycopg.Connection], Any] | None = None,
    after: Callable[[T], Any] | None = None,
    sensitive: Mapping[str, Any] | None = None,
) -> Callable[Concatenate[psycopg.Connection, P], T]:
    """``work`` plus its audit row in the same transaction: ``db.run(wrap(entry, fn), *args)``.

    ``before(conn)`` reads the prior state first; ``after(result)`` turns the result into the
    new state (default: the result itself if it is JSON-able)."""

    def audited(conn: psycopg.Connection, /, *args: P.args, **kwargs: P.kwargs) -> T:
        prior = before(conn) if before is not None else entry.before
        result = work(conn, *args, **kwargs)
        new = after(result) if after is not None else _state(result)
        append(
            conn,
            Entry(**{**entry.__dict__, "before": prior, "after": new}),
            sensitive=sensitive,
        )
        return result

    return audited


def _state(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | list | dict):
        return value
    as_json = getattr(value, "as_json", None)
    if callable(as_json):
        return as_json()
    return None


def record(conn: psycopg.Connection, entry: Entry, **kwargs: Any) -> None:
    """Store function form of ``append`` (``db.run(record, entry)``) for events that are not
    a change in the same transaction: failed logins, exports."""
    append(conn, entry, **kwargs)


# -- query --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    actor: str | None = None
    action: str | None = None  # a prefix: "threshold." matches every threshold action
    resource: str | None = None  # a substring
    category: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_at: datetime | None = None  # keyset paging: rows older than this ...
    before_seq: int | None = None  # ... or as old with a lower seq


def _where(f: Filters) -> tuple[sql.Composable, list[Any]]:
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    if f.actor:
        clauses.append(sql.SQL("actor = %s"))
        params.append(f.actor)
    if f.action:
        clauses.append(sql.SQL("starts_with(action, %s)"))
        params.append(f.action)
    if f.resource:
        clauses.append(sql.SQL("strpos(resource, %s) > 0"))
        params.append(f.resource)
    if f.category:
        clauses.append(sql.SQL("category = %s"))
        params.append(f.category)
    if f.since:
        clauses.append(sql.SQL("at >= %s"))
        params.append(f.since)
    if f.until:
        clauses.append(sql.SQL("at < %s"))
        params.append(f.until)
    if f.before_at is not None:
        clauses.append(sql.SQL("(at, seq) < (%s, %s)"))
        params.extend([f.before_at, f.before_seq if f.before_seq is not None else 2**62])
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("")
    return where, params


def out(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as the API shows it: the body's fields, its hash and chain position."""
    content = json.loads(row["body"])
    return {
        "category": row["category"],
        "seq": row["seq"],
        "at": content.get("at"),
        "actor": content.get("actor"),
        "role": content.get("role"),
        "ip": content.get("ip"),
        "user_agent": content.get("user_agent"),
        "source": content.get("source"),
        "action": content.get("action"),
        "resource": content.get("resource"),
        "outcome": content.get("outcome"),
        "before": content.get("before"),
        "after": content.get("after"),
        "detail": content.get("detail") or {},
        "hash": row["hash"],
        "prev_hash": row["prev_hash"],
    }


def query(conn: psycopg.Connection, filters: Filters, limit: int = 200) -> list[dict[str, Any]]:
    where, params = _where(filters)
    statement = (
        sql.SQL("SELECT category, seq, at, body, hash, prev_hash FROM audit_log")
        + where
        + sql.SQL(" ORDER BY at DESC, seq DESC LIMIT %s")
    )
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(statement, [*params, limit]).fetchall()
    return [out(r) for r in rows]


# Highlighted in the viewer: this many failed logins from one address or for one account
# within the window.
BURST_FAILURES = 5
BURST_WINDOW_S = 300


def failed_login_bursts(conn: psycopg.Connection, filters: Filters) -> list[dict[str, Any]]:
    """Addresses and accounts with BURST_FAILURES failed logins within BURST_WINDOW_S, in
    the filtered time range (the viewer marks their rows)."""
    where, params = _where(
        Filters(since=filters.since, until=filters.until, category="auth", action="auth.login")
    )
    statement = (
        sql.SQL(
            "SELECT kind, who, max(n) AS failures, min(at) AS first, max(at) AS last FROM ("
            " SELECT 'ip' AS kind, ip AS who, at,"
            "  count(*) OVER (PARTITION BY ip ORDER BY at"
            "   RANGE BETWEEN make_interval(secs => %s) PRECEDING AND CURRENT ROW) AS n"
            " FROM audit_log"
        )
        + where
        + sql.SQL(" AND outcome = 'failure' AND ip IS NOT NULL")
        + sql.SQL(
            " UNION ALL SELECT 'account', actor, at,"
            "  count(*) OVER (PARTITION BY actor ORDER BY at"
            "   RANGE BETWEEN make_interval(secs => %s) PRECEDING AND CURRENT ROW)"
            " FROM audit_log"
        )
        + where
        + sql.SQL(" AND outcome = 'failure' AND actor IS NOT NULL")
        + sql.SQL(") w WHERE n >= %s GROUP BY kind, who ORDER BY max(at) DESC LIMIT 100")
    )
    args = [BURST_WINDOW_S, *params, BURST_WINDOW_S, *params, BURST_FAILURES]
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(statement, args).fetchall()
    return [
        {
            "kind": r["kind"],
            "who": r["who"],
            "failures": r["failures"],
            "first": r["first"].isoformat(),
            "last": r["last"].isoformat(),
        }
        for r in rows
    ]


# -- verification -------------------------------------------------------------------------


def _rows(conn: psycopg.Connection, category: str, after_seq: int) -> Iterator[dict[str, Any]]:
    # A server-side cursor: a chain of millions of rows is walked in constant memory.
    with conn.cursor(name=f"audit_verify_{category}", row_factory=dict_row) as cur:
        cur.itersize = 2000
        cur.execute(
            "SELECT category, seq, at, actor, action, resource, outcome, ip, body, prev_hash,"
            " hash FROM audit_log WHERE category = %s AND seq > %s ORDER BY seq, at",
            (category, after_seq),
        )
        yield from cur


def read_checkpoint_file(path: Path) -> list[Checkpoint]:
    if not path.is_file():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            doc = json.loads(line)
            found.append(Checkpoint(doc["statement"], doc["key_id"], doc["signature"]))
    return found


def _stored_checkpoints(conn: psycopg.Connection) -> list[Checkpoint]:
    rows = conn.execute(
        "SELECT statement, key_id, signature FROM audit_checkpoints ORDER BY id"
    ).fetchall()
    return [Checkpoint(r[0], r[1], r[2]) for r in rows]


def verify(
    conn: psycopg.Connection,
    public_key: Ed25519PublicKey | None = None,
    checkpoint_file: Path | None = None,
) -> dict[str, Any]:
    """Every chain walked from its base to its head, then every signed checkpoint (from the
    database and from ``checkpoint_file``) checked against the rows. The first problem found
    is reported with its row; ``ok`` only if there is none."""
    heads = {
        r[0]: (int(r[1]), str(r[2]), int(r[3]), str(r[4]))
        for r in conn.execute(
            "SELECT category, seq, hash, base_seq, base_hash FROM audit_chain_head"
        ).fetchall()
    }
    problem: Problem | None = None
    chains: dict[str, dict[str, Any]] = {}
    for category in CATEGORIES:
        if category not in heads:
            problem = problem or Problem(category, None, "deleted", "the chain head row is gone")
            continue
        seq, hash_, base_seq, base_hash = heads[category]
        last, _last_hash, found = verify_chain(
            category,
            _rows(conn, category, base_seq),
            base_seq=base_seq,
            base_hash=base_hash,
            head=(seq, hash_),
        )
        chains[category] = {"rows": last - base_seq, "head_seq": seq, "base_seq": base_seq}
        problem = problem or _check_base(conn, category, base_seq) or found
    checkpoints = _stored_checkpoints(conn)
    from_file = read_checkpoint_file(checkpoint_file) if checkpoint_file else []
    # The file is the anchor outside the database: each of its checkpoints must also be in
    # the table (a deleted one shows a rewrite), and both sets must hold against the rows.
    stored = {c.signature for c in checkpoints}
    for c in from_file:
        if c.signature not in stored:
            problem = problem or Problem(
                "audit",
                None,
                "deleted",
                f"checkpoint of {c.at()} is in the file but not the database",
            )
    checked = 0
    latest: str | None = None
    if public_key is not None:
        expected_kid = key_id(public_key)
        seen: set[str] = set()
        for c in [*checkpoints, *from_file]:
            if c.signature in seen:
                continue
            seen.add(c.signature)
            if c.key_id != expected_kid or not signature_valid(c, public_key):
                problem = problem or Problem(
                    "audit", None, "signature", f"checkpoint of {c.at()} has no valid signature"
                )
                continue
            found = _check_against_rows(conn, c, heads)
            problem = problem or found
            checked += 1
            latest = max(latest or "", c.at())
    return {
        "ok": problem is None,
        "problem": problem.as_json() if problem else None,
        "chains": chains,
        "checkpoints_checked": checked,
        "latest_checkpoint": latest,
        "signature_checked": public_key is not None,
    }


def _check_base(conn: psycopg.Connection, category: str, base_seq: int) -> Problem | None:
    """The chain's base must be where the last recorded retention drop left it: moving it
    by hand would hide the rows before it."""
    row = conn.execute(
        "SELECT max((body::jsonb #>> '{detail,last_seq}')::bigint) FROM audit_log"
        " WHERE category = 'audit' AND action = 'audit.retention_drop'"
        " AND body::jsonb #>> '{detail,partition}' LIKE %s",
        (f"audit_log_{category}_%",),
    ).fetchone()
    recorded = int(row[0]) if row and row[0] is not None else 0
    if recorded != base_seq:
        return Problem(
            category,
            recorded + 1,
            "deleted",
            f"the chain starts after row {base_seq}, but retention dropped only up to {recorded}",
        )
    return None


def _check_against_rows(
    conn: psycopg.Connection, checkpoint: Checkpoint, heads: Mapping[str, tuple[int, str, int, str]]
) -> Problem | None:
    for category, (seq, hash_) in checkpoint.heads().items():
        base_seq = heads.get(category, (0, "", 0, ""))[2]
        if seq <= base_seq:
            continue  # that part of the chain was dropped by retention (itself recorded)
        row = conn.execute(
            "SELECT hash FROM audit_log WHERE category = %s AND seq = %s ORDER BY at LIMIT 1",
            (category, seq),
        ).fetchone()
        if row is None:
            return Problem(
                category, seq, "deleted", f"row {seq} signed at {checkpoint.at()} is gone"
            )
        if row[0] != hash_:
            return Problem(
                category,
                seq,
                "rewritten",
                f"row {seq} differs from the head signed at {checkpoint.at()} (chain rewritten)",
            )
    return None


# -- checkpoints --------------------------------------------------------------------------


def create_checkpoint(
    conn: psycopg.Connection, key: PrivateKeyLike, checkpoint_file: Path | None = None
) -> Checkpoint:
    """Sign every chain's head now; stored in audit_checkpoints and appended to the file."""
    # FOR SHARE: no append moves a head while they are read, so the statement is consistent.
    heads = {
        r[0]: (int(r[1]), str(r[2]))
        for r in conn.execute(
            "SELECT category, seq, hash FROM audit_chain_head ORDER BY category FOR SHARE"
        ).fetchall()
    }
    (now,) = conn.execute("SELECT clock_timestamp()").fetchone() or (datetime.now(UTC),)
    checkpoint = sign(heads, now, key)
    conn.execute(
        "INSERT INTO audit_checkpoints (at, statement, key_id, signature) VALUES (%s, %s, %s, %s)",
        (now, checkpoint.statement, checkpoint.key_id, checkpoint.signature),
    )
    if checkpoint_file is not None:
        checkpoint_file.parent.mkdir(parents=True, exist_ok=True)
        with checkpoint_file.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(checkpoint.as_json(), sort_keys=True) + "\n")
    log_event(log, logging.INFO, "audit checkpoint signed", key_id=checkpoint.key_id, heads=heads)
    return checkpoint


def configured_public_key(settings: AuditSettings) -> Ed25519PublicKey | None:
    if settings.verify_key_file is not None:
        return load_public_key(str(settings.verify_key_file))
    if settings.signing_key_file is not None:
        from shared.model_bundle import load_private_key

        return load_private_key(str(settings.signing_key_file)).public_key()
    return None


# -- retention ----------------------------------------------------------------------------


def _month_start(day: date, back: int) -> date:
    index = day.year * 12 + day.month - 1 - back
    return date(index // 12, index % 12 + 1, 1)


def ensure_partitions(conn: psycopg.Connection, months_ahead: int = 3) -> int:
    row = conn.execute(
        "SELECT audit_ensure_partitions(current_date, %s)", (months_ahead,)
    ).fetchone()
    return int(row[0]) if row else 0


def drop_expired(
    conn: psycopg.Connection, retention_months: Mapping[str, int], today: date | None = None
) -> list[str]:
    """Drop the month partitions of each category older than its retention (0: keep). Each
    drop moves the chain's base past the dropped rows and is recorded in the ``audit`` chain
    with the rows' seq range and the hash the chain now starts from."""
    today = today or datetime.now(UTC).date()
    dropped: list[str] = []
    for category in CATEGORIES:
        months = retention_months.get(category, 0)
        if months <= 0:
            continue
        cutoff = _month_start(today, months)
        parts = conn.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent"
            " WHERE p.relname = %s AND c.relname ~ '_[0-9]{6}$' ORDER BY c.relname",
            (f"audit_log_{category}",),
        ).fetchall()
        for name, _bound in parts:
            stamp = name.rsplit("_", 1)[1]
            start = date(int(stamp[:4]), int(stamp[4:]), 1)
            if _month_start(start, -1) > cutoff:
                continue
            # Lock the chain head: no append in this category while its base moves.
            conn.execute(
                "SELECT 1 FROM audit_chain_head WHERE category = %s FOR UPDATE", (category,)
            )
            last = conn.execute(
                sql.SQL("SELECT seq, hash FROM {} ORDER BY seq DESC LIMIT 1").format(
                    sql.Identifier(name)
                )
            ).fetchone()
            span = conn.execute(
                sql.SQL("SELECT min(seq), count(*) FROM {}").format(sql.Identifier(name))
            ).fetchone()
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
            if last is not None and span is not None:
                conn.execute(
                    "UPDATE audit_chain_head SET base_seq = %s, base_hash = %s"
                    " WHERE category = %s AND base_seq < %s",
                    (last[0], last[1], category, last[0]),
                )
            append(
                conn,
                Entry(
                    category="audit",
                    action="audit.retention_drop",
                    resource=f"audit_log:{category}:{stamp}",
                    actor="rig-cloud maintain",
                    source="cli",
                    detail={
                        "partition": name,
                        "retention_months": months,
                        "first_seq": span[0] if span else None,
                        "last_seq": last[0] if last else None,
                        "rows": span[1] if span else 0,
                        "base_hash": last[1] if last else None,
                    },
                ),
            )
            dropped.append(name)
    return dropped
