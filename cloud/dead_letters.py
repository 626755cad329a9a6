"""Dead letters: messages set aside with their reason, kept whole so they can be replayed.

Table ``dead_letters`` (migrations 0001, 0011, 0014) holds one row per message the aggregator
could not store: ``source`` ("kafka"), its position (``topic``, ``kafka_partition``,
``kafka_offset``, unique: a redelivered poison message stays one letter), its Kafka key
(``kafka_key``), the whole payload (``payload``, ``payload_bytes``), ``reason`` (the field
and the problem, as the ingest API would answer), ``detail`` (both versions of a key
conflict), ``received_at``. The topic ``KAFKA_DEAD_LETTER_TOPIC`` (default
``sensor-data-dlq``) mirrors new letters for Kafka tooling, with the original key, the payload
and headers ``reason``, ``source_topic``, ``source_partition``, ``source_offset``; the table
is the record.

``replay`` (``rig-cloud dead-letters replay``) is for after a fix — the acceptance window
widened, a producer's bug understood and the rules changed: each open letter is validated
again with the rules in force now. One that is valid is stored in the same transaction that
marks it ``replayed`` (exactly once: the key ``(edge_id, seq)`` drops a reading already
stored, as for any redelivery); one that is still invalid stays ``open`` with its new reason.
Running it again changes nothing: replayed letters are not read again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from cloud.storage import clean_text, store_readings
from shared.logs import log_event
from shared.message import DEFAULT_WINDOW, MessageError, Reading, TimeWindow, decode_reading

log = logging.getLogger(__name__)

# Before migration 0014 payloads were cut at this length; such a letter cannot be replayed.
LEGACY_PAYLOAD_CUT = 65536


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message set aside with its reason: ``source`` "kafka" (with its position and key)
    or "api"; ``payload`` the whole message; ``detail`` what the reason cannot hold (both
    versions of a key conflict)."""

    source: str
    reason: str
    payload: bytes | None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    detail: dict[str, Any] | None = None
    key: bytes | None = None


def _json(obj: object) -> str:
    return orjson.dumps(obj).decode()


_INSERT = (
    "INSERT INTO dead_letters (source, topic, kafka_partition, kafka_offset, kafka_key, reason, "
    "first_reason, payload, payload_bytes, detail) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (topic, kafka_partition, kafka_offset) WHERE source = 'kafka' DO NOTHING "
    "RETURNING id"
)


def store_dead_letters(conn: psycopg.Connection, letters: Sequence[DeadLetter]) -> list[int]:
    """Insert dead letters in the caller's transaction, payload and key whole; returns the
    indexes of the letters stored now (a Kafka message dead-lettered before, then
    redelivered, is stored once)."""
    if not letters:
        return []
    stored: list[int] = []
    with conn.cursor() as cur:
        cur.executemany(
            _INSERT,
            [
                (
                    d.source,
                    d.topic,
                    d.partition,
                    d.offset,
                    d.key,
                    clean_text(d.reason),
                    clean_text(d.reason),
                    d.payload,
                    len(d.payload) if d.payload is not None else None,
                    Jsonb(d.detail, dumps=_json) if d.detail is not None else None,
                )
                for d in letters
            ],
            returning=True,
        )
        index = 0
        while True:
            if cur.fetchone() is not None:
                stored.append(index)
            index += 1
            if not cur.nextset():
                break
    return stored


# --- list -------------------------------------------------------------------------------------


def list_dead_letters(
    conn: psycopg.Connection,
    *,
    status: str = "open",
    limit: int = 50,
    reason: str | None = None,
) -> list[dict[str, Any]]:
    """The newest letters first (``status`` "open", "replayed" or "all"; ``reason``: a
    substring of the current reason), without payloads: their size, key and a preview."""
    rows = conn.execute(
        "SELECT id, received_at, source, topic, kafka_partition, kafka_offset, kafka_key, "
        "payload_bytes, length(payload), substring(payload FROM 1 FOR 120), status, replays, "
        "last_replay_at, reason, coalesce(first_reason, reason), stored_edge_id, stored_seq "
        "FROM dead_letters WHERE (%(status)s = 'all' OR status = %(status)s) "
        "AND (%(reason)s::text IS NULL OR strpos(reason, %(reason)s) > 0) "
        "ORDER BY id DESC LIMIT %(limit)s",
        {"status": status, "reason": reason, "limit": limit},
    ).fetchall()
    out = []
    for (
        letter_id,
        received,
        source,
        topic,
        partition,
        offset,
        key,
        size,
        kept,
        preview,
        state,
        replays,
        replayed_at,
        current,
        first,
        edge_id,
        seq,
    ) in rows:
        out.append(
            {
                "id": letter_id,
                "received_at": received.isoformat(),
                "source": source,
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "key": _text(key),
                "payload_bytes": size if size is not None else kept,
                "payload_complete": size is not None,
                "payload_preview": _text(preview),
                "status": state,
                "replays": replays,
                "last_replay_at": replayed_at.isoformat() if replayed_at else None,
                "reason": current,
                "first_reason": first,
                "stored_as": {"edge_id": edge_id, "seq": seq} if edge_id is not None else None,
            }
        )
    return out


def _text(raw: bytes | memoryview | None) -> str | None:
    if raw is None:
        return None
    return bytes(raw).decode("utf-8", "backslashreplace")


# --- replay -----------------------------------------------------------------------------------


@dataclass(slots=True)
class ReplayReport:
    """What a replay did: letters ``examined``; ``stored`` (new readings), ``duplicates``
    (valid, and their key was already stored with the same content: marked replayed too),
    ``still_invalid`` (open, with their new reason), ``incomplete`` (payload cut before
    0014: cannot be replayed). ``reasons``: letter id -> reason of those still open."""

    examined: int = 0
    stored: int = 0
    duplicates: int = 0
    still_invalid: int = 0
    incomplete: int = 0
    reasons: dict[int, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "still_invalid": self.still_invalid,
            "incomplete": self.incomplete,
            "reasons": {str(k): v for k, v in self.reasons.items()},
        }


def replay(
    conn: psycopg.Connection,
    *,
    window: TimeWindow | None = DEFAULT_WINDOW,
    ids: Sequence[int] | None = None,
    reason: str | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    chunk: int = 500,
    now: datetime | None = None,
) -> ReplayReport:
    """Validate the open letters (all, ``ids``, or those whose reason contains ``reason``;
    at most ``limit``) again with ``window`` and the codec as it is now, store the valid
    ones and mark them replayed, record the new reason of the others. One transaction per
    ``chunk`` letters (rows locked, so two replays at once share the work, never repeat
    it); ``dry_run`` rolls every chunk back and only reports."""
    report = ReplayReport()
    after = 0
    while limit is None or report.examined < limit:
        take = chunk if limit is None else min(chunk, limit - report.examined)
        with conn.transaction(force_rollback=dry_run):
            rows = conn.execute(
                "SELECT id, payload, payload_bytes FROM dead_letters WHERE status = 'open' "
                "AND id > %(after)s AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s)) "
                "AND (%(reason)s::text IS NULL OR strpos(reason, %(reason)s) > 0) "
                "ORDER BY id LIMIT %(take)s FOR UPDATE SKIP LOCKED",
                {"after": after, "ids": list(ids) if ids else None, "reason": reason, "take": take},
            ).fetchall()
            if not rows:
                break
            for letter_id, payload, size in rows:
                _replay_one(conn, report, letter_id, payload, size, window, now)
            after = rows[-1][0]
    log_event(
        log,
        logging.INFO,
        "dead letters replayed" if not dry_run else "dead letters replay (dry run)",
        **{k: v for k, v in report.as_json().items() if k != "reasons"},
    )
    return report


def _replay_one(
    conn: psycopg.Connection,
    report: ReplayReport,
    letter_id: int,
    payload: bytes | None,
    size: int | None,
    window: TimeWindow | None,
    now: datetime | None,
) -> None:
    report.examined += 1
    if payload is None or (size is None and len(payload) >= LEGACY_PAYLOAD_CUT):
        report.incomplete += 1
        report.reasons[letter_id] = "payload incomplete (cut before migration 0014)"
        return
    try:
        reading = decode_reading(bytes(payload), window=window, now=now or datetime.now(UTC))
    except MessageError as exc:
        _still_invalid(conn, report, letter_id, str(exc), None)
        return
    except Exception as exc:  # the codec's contract is MessageError only: a bug to fix
        log.exception("decoding raised %s instead of MessageError", type(exc).__name__)
        _still_invalid(conn, report, letter_id, f"$: cannot be decoded ({exc!r})", None)
        return
    problem = _store(conn, reading)
    if isinstance(problem, tuple):
        _still_invalid(conn, report, letter_id, *problem)
        return
    if problem:
        report.stored += 1
    else:
        report.duplicates += 1
    conn.execute(
        "UPDATE dead_letters SET status = 'replayed', replays = replays + 1, "
        "last_replay_at = now(), stored_edge_id = %s, stored_seq = %s WHERE id = %s",
        (reading.edge_id, reading.seq, letter_id),
    )


def _store(conn: psycopg.Connection, reading: Reading) -> bool | tuple[str, dict[str, Any] | None]:
    """True: stored now; False: its key already holds the same content; (reason, detail):
    not storable (a key conflict, or PostgreSQL refuses the row). In a savepoint: a refused
    row leaves the chunk's other work intact."""
    from cloud.aggregator import is_infrastructure_error, is_row_error

    try:
        with conn.transaction():
            result = store_readings(conn, [reading])
    except Exception as exc:
        if is_infrastructure_error(exc) or not is_row_error(exc):
            raise
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"refused by the database: {type(exc).__name__}: {text}"[:500], None
    if result.conflicts:
        conflict = result.conflicts[0]
        return conflict.reason, conflict.detail
    return result.inserted == 1


def _still_invalid(
    conn: psycopg.Connection,
    report: ReplayReport,
    letter_id: int,
    reason: str,
    detail: dict[str, Any] | None,
) -> None:
    report.still_invalid += 1
    report.reasons[letter_id] = reason
    conn.execute(
        "UPDATE dead_letters SET reason = %s, detail = coalesce(%s, detail), "
        "first_reason = coalesce(first_reason, reason), replays = replays + 1, "
        "last_replay_at = now() WHERE id = %s",
        (clean_text(reason), Jsonb(detail, dumps=_json) if detail else None, letter_id),
    )
