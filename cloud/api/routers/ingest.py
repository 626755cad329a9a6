"""POST /api/v1/ingest: one reading or a batch, from edges and any integrator's hardware.

Validation is all-or-nothing: one invalid reading rejects the whole body with a 4xx naming
the field, and nothing from it is stored. 200 means durably accepted: committed to
PostgreSQL, or (when Kafka is configured) confirmed by the broker with acks=all.

- Key ``(edge_id, seq)``: a reading reusing a stored key with other content is a conflict.
  Without Kafka the body is refused with 409 (nothing stored, both versions named); with
  Kafka the aggregator dead-letters it.
- Kafka down or slow: 503 with ``Retry-After`` after at most the delivery deadline (2 s),
  with per-reading ``results``: which readings are in (``accepted``, with partition and
  offset), which are not (``failed``) and which may or may not be (``unconfirmed``).
  Resending the whole body is safe when its readings carry ``seq`` and ``ts`` or the
  request an ``Idempotency-Key``. A reading Kafka refuses for good (too large): 422 with
  the same ``results``.
- ``Idempotency-Key`` (1-255 visible ASCII characters): the first request's assigned
  ``seq``/``ts`` are kept 24 h, so a retry of the same body gets the same keys and stores
  nothing new; the same key with another body is refused (422).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import psycopg
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from psycopg import Error as PsycopgError
from psycopg.types.json import Jsonb
from starlette.concurrency import run_in_threadpool

from cloud.aggregator import is_infrastructure_error, is_row_error
from cloud.api.deps import Services
from cloud.api.errors import ApiError
from cloud.api.guards import IngestEdge
from cloud.api.schemas import ErrorOut, IngestConflictsOut, IngestNotTakenOut, IngestOut
from cloud.ingest_producer import Delivery, Failure, KafkaUnavailable, Outcome
from cloud.storage import Conflict, StoreResult, store_readings
from shared.failpoints import failpoint
from shared.message import MessageError, Reading, format_ts, parse_reading

router = APIRouter(tags=["ingest"])

_INGEST_BODY_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {
            "type": "object",
            "description": "One reading. Canonical shape: machine_id, edge_id, seq, ts, values "
            "{core sensor: number}, custom {name: number}. Integrator shape: machine_id plus "
            "sensor fields at top level and custom_sensors; edge_id/seq/timestamp optional.",
            "required": ["machine_id"],
            "properties": {"machine_id": {"type": "string"}},
            "additionalProperties": True,
        },
        {
            "type": "object",
            "required": ["readings"],
            "properties": {"readings": {"type": "array", "items": {"type": "object"}}},
        },
        {"type": "array", "items": {"type": "object"}},
    ]
}


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "$", f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "$", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_body(raw: bytes, max_batch: int) -> tuple[list[Any], bool]:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError: not JSON, not UTF-8, or an integer past Python's digit limit;
        # RecursionError: nesting deeper than the parser's stack.
        raise ApiError(400, "$", f"body is not valid JSON: {_safe(str(exc))[:200]}") from None
    if isinstance(doc, list):
        items, path = doc, "$"
    elif isinstance(doc, dict) and "readings" in doc:
        items, path = doc["readings"], "$.readings"
        if not isinstance(items, list):
            raise ApiError(422, path, "expected an array of readings")
    elif isinstance(doc, dict):
        return [doc], False
    else:
        raise ApiError(422, "$", 'expected a reading object, an array, or {"readings": [...]}')
    if not items:
        raise ApiError(422, path, "the batch is empty")
    if len(items) > max_batch:
        raise ApiError(413, path, f"{len(items)} readings exceed the batch limit of {max_batch}")
    return items, True


def _safe(text: str) -> str:
    """Client-supplied names quoted in an error may hold lone surrogates (JSON allows
    ``\\ud800``); the answer must still encode as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Durably accepted"},
    400: {"model": ErrorOut, "description": "Not JSON"},
    401: {"model": ErrorOut, "description": "Missing or wrong X-API-KEY"},
    403: {"model": ErrorOut, "description": "A per-edge key writing another edge's readings"},
    409: {
        "model": IngestConflictsOut,
        "description": "Without Kafka: a reading reuses a stored (edge_id, seq) with other "
        "content; nothing of the body is stored, `conflicts` names both versions",
    },
    413: {"model": ErrorOut, "description": "Body or batch too large"},
    422: {
        "model": ErrorOut | IngestNotTakenOut,
        "description": "Invalid reading (`field` names the offending JSON path), or an "
        "Idempotency-Key reused with another body; with Kafka, a reading the broker refuses "
        "for good (too large, invalid), with per-reading `results`",
    },
    503: {
        "model": ErrorOut | IngestNotTakenOut,
        "description": "Storage or Kafka unavailable; retry after Retry-After. With Kafka, "
        "`results` says per reading which were accepted (partition, offset), failed, or "
        "unconfirmed",
    },
}


@router.post(
    "/api/v1/ingest",
    summary="Ingest one reading or a batch",
    # Documents the body: the handler answers with a ready JSONResponse, passed through.
    response_model=IngestOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _INGEST_BODY_SCHEMA}},
        },
        "parameters": [],
    },
    responses=_RESPONSES,
)
async def ingest(
    request: Request,
    services: Services,
    key_edge: IngestEdge,
    x_edge_backlog: Annotated[
        int | None,
        Header(ge=0, le=2**62, description="readings still buffered on the sending edge"),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            description="makes retries of this request store nothing new (kept 24 h); "
            "1-255 visible ASCII characters"
        ),
    ] = None,
) -> JSONResponse:
    settings = services.settings
    if idempotency_key is not None and not _IDEMPOTENCY_KEY_RE.match(idempotency_key):
        raise ApiError(422, "Idempotency-Key", "1-255 visible ASCII characters")
    raw = await _read_body(request, settings.max_body_bytes)
    items, is_batch = _parse_body(raw, settings.max_batch_readings)
    now = datetime.now(UTC)
    window = settings.window
    # The bootstrap key (RIG_INGEST_API_KEY) may write for any edge, like the prototype's one
    # shared key (docs/manifest.md §3.2); a per-edge key writes only its own edge's
    # readings, so a stolen rig's key cannot forge or shadow another rig's sequence numbers.
    bootstrap = key_edge == "default"
    default_edge = "ingest:default" if bootstrap else key_edge

    readings: list[Reading] = []
    needs_seq: list[int] = []
    for i, item in enumerate(items):
        path = f"$.readings[{i}]" if is_batch else "$"
        try:
            reading = parse_reading(
                item,
                path=path,
                default_edge_id=default_edge,
                default_seq=0,
                default_ts=now,
                now=now,
                window=window,
            )
        except MessageError as exc:
            raise ApiError(422, _safe(exc.field), _safe(exc.problem)) from None
        if not bootstrap and reading.edge_id != key_edge:
            raise ApiError(403, f"{path}.edge_id", f"this API key belongs to edge {key_edge!r}")
        if "seq" not in item:
            needs_seq.append(i)
        readings.append(reading)

    try:
        if idempotency_key is not None:
            body_sha = hashlib.sha256(raw).digest()
            await run_in_threadpool(
                _assign_once,
                services,
                (key_edge, idempotency_key),
                body_sha,
                readings,
                needs_seq,
            )
        elif needs_seq:
            seqs = await run_in_threadpool(_allocate_seqs, services, len(needs_seq))
            for index, seq in zip(needs_seq, seqs, strict=True):
                readings[index].seq = seq
        if services.producer is None:
            backlog = _backlog_by_edge(readings, x_edge_backlog)
            result = await run_in_threadpool(_store, services, readings, backlog)
            return _stored_answer(result, is_batch)
    except _ConflictRefused as refused:
        return _conflict_answer(refused.conflicts, is_batch)
    except _IdempotencyMismatch:
        raise ApiError(
            422, "Idempotency-Key", "already used with a different body; use a new key"
        ) from None
    except PsycopgError as exc:
        if not is_infrastructure_error(exc) and is_row_error(exc):
            # PostgreSQL refuses a row the validation let through: the client cannot fix it
            # by retrying, and an edge bisects a 4xx batch to set the reading aside.
            raise ApiError(
                422, "$", _safe(f"refused by the database: {type(exc).__name__}: {exc}")[:500]
            ) from None
        raise ApiError(
            503, "$", f"storage unavailable: {type(exc).__name__}", retry_after=5
        ) from None

    try:
        outcomes = await services.producer.produce(
            readings,
            timeout=settings.ingest_delivery_timeout_ms / 1000,
            backlog=x_edge_backlog,
            max_in_flight=settings.ingest_max_in_flight,
        )
    except KafkaUnavailable as exc:
        raise ApiError(503, "$", f"Kafka unavailable: {exc}", retry_after=5) from None
    if any(isinstance(o, Delivery) for o in outcomes):
        failpoint("cloud.ingest.after_produce")
    return _produced_answer(outcomes, is_batch, readings)


def _produced_answer(
    outcomes: list[Outcome], is_batch: bool, readings: list[Reading]
) -> JSONResponse:
    deliveries = [o for o in outcomes if isinstance(o, Delivery)]
    if len(deliveries) == len(outcomes):
        last = deliveries[-1]
        body: dict[str, Any] = {
            "success": True,
            "accepted": len(deliveries),
            "topic": last.topic,
            "partition": last.partition,
            "offset": last.offset,
        }
        if is_batch:
            body["deliveries"] = [
                {"partition": d.partition, "offset": d.offset} for d in deliveries
            ]
        body["keys"] = _keys(readings, is_batch)
        return JSONResponse(body)
    # Not 207: a client that looks only at the status must not take a partly produced
    # batch for a success. 422 when Kafka refused a reading for good (too large, invalid:
    # resending cannot help; an edge bisects a 4xx batch and sets that reading aside);
    # otherwise 503 + Retry-After (resending the whole body is safe with seq+ts or an
    # Idempotency-Key: the key drops what is already in). Either way ``results`` says per
    # reading what happened, so a client may resend only what is not accepted.
    results: list[dict[str, Any]] = []
    failed = unconfirmed = 0
    permanent = False
    for i, (outcome, reading) in enumerate(zip(outcomes, readings, strict=True)):
        entry: dict[str, Any] = {
            "field": f"$.readings[{i}]" if is_batch else "$",
            "edge_id": reading.edge_id,
            "seq": reading.seq,
            "ts": format_ts(reading.ts),
        }
        if isinstance(outcome, Delivery):
            entry.update(status="accepted", partition=outcome.partition, offset=outcome.offset)
        elif isinstance(outcome, Failure):
            failed += 1
            permanent = permanent or outcome.permanent
            entry.update(status="failed", error=outcome.error, permanent=outcome.permanent)
        else:
            unconfirmed += 1
            entry.update(status="unconfirmed", error="no broker confirmation in time")
        results.append(entry)
    # The reading the answer names: the first refused for good, else the first not taken.
    first = next(r for r in results if r.get("permanent") or (not permanent and "error" in r))
    status = 422 if permanent else 503
    return JSONResponse(
        {
            "success": False,
            "error": f"Kafka did not take {failed + unconfirmed} of {len(outcomes)} readings: "
            f"{first['error']}",
            "field": first["field"],
            "status": status,
            "accepted": len(deliveries),
            "failed": failed,
            "unconfirmed": unconfirmed,
            "results": results,
        },
        status_code=status,
        headers=None if permanent else {"Retry-After": "5"},
    )


def _keys(readings: list[Reading], is_batch: bool) -> Any:
    """The keys the readings travel under (assigned ones included), so an integrator can
    resend them verbatim and be deduplicated."""
    keys = [{"edge_id": r.edge_id, "seq": r.seq, "ts": format_ts(r.ts)} for r in readings]
    return keys if is_batch else keys[0]


def _stored_answer(result: StoreResult, is_batch: bool) -> JSONResponse:
    return JSONResponse(
        {
            "success": True,
            "accepted": result.received,
            "stored": result.inserted,
            "duplicates": result.duplicates,
        }
    )


def _conflict_answer(conflicts: tuple[Conflict, ...], is_batch: bool) -> JSONResponse:
    def field(index: int) -> str:
        return f"$.readings[{index}]" if is_batch else "$"

    first = conflicts[0]
    return JSONResponse(
        {
            "error": first.reason,
            "field": field(first.index),
            "status": 409,
            "conflicts": [
                {
                    "field": field(c.index),
                    "error": c.reason,
                    "stored": c.detail["stored"],
                    "received": c.detail["received"],
                }
                for c in conflicts
            ],
        },
        status_code=409,
    )


class _ConflictRefused(Exception):
    def __init__(self, conflicts: tuple[Conflict, ...]) -> None:
        super().__init__("key conflict")
        self.conflicts = conflicts


class _IdempotencyMismatch(Exception):
    pass


def _allocate_seqs(services: Any, count: int) -> list[int]:
    with services.pool.connection() as conn:
        return _nextvals(conn, count)


def _nextvals(conn: psycopg.Connection, count: int) -> list[int]:
    rows = conn.execute(
        "SELECT nextval('ingest_seq') FROM generate_series(1, %s)", (count,)
    ).fetchall()
    return [int(r[0]) for r in rows]


def _assign_once(
    services: Any,
    scope_key: tuple[str, str],
    body_sha: bytes,
    readings: list[Reading],
    needs_seq: list[int],
) -> None:
    """Give the readings the seq/ts the first request with this key got (or record what
    this one gets). Concurrent first requests agree: one insert wins, the other reads it."""
    scope, key = scope_key
    with services.pool.connection() as conn, conn.transaction():
        conn.execute(
            "DELETE FROM ingest_idempotency WHERE scope = %s AND key = %s "
            "AND created_at < now() - interval '24 hours'",
            (scope, key),
        )
        for _attempt in range(2):
            row = conn.execute(
                "SELECT body_sha256, assigned FROM ingest_idempotency "
                "WHERE scope = %s AND key = %s",
                (scope, key),
            ).fetchone()
            if row is not None:
                if bytes(row[0]) != body_sha or len(row[1]) != len(readings):
                    raise _IdempotencyMismatch
                for reading, (seq, ts) in zip(readings, row[1], strict=True):
                    reading.seq = int(seq)
                    reading.ts = datetime.fromisoformat(ts)
                return
            if needs_seq:
                for index, seq in zip(needs_seq, _nextvals(conn, len(needs_seq)), strict=True):
                    readings[index].seq = seq
            assigned = [[r.seq, format_ts(r.ts)] for r in readings]
            inserted = conn.execute(
                "INSERT INTO ingest_idempotency (scope, key, body_sha256, assigned) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (scope, key) DO NOTHING RETURNING 1",
                (scope, key, body_sha, Jsonb(assigned, dumps=lambda o: orjson.dumps(o).decode())),
            ).fetchone()
            if inserted is not None:
                return
        raise _IdempotencyMismatch  # pragma: no cover - the row vanished twice


def _backlog_by_edge(readings: list[Reading], backlog: int | None) -> dict[str, int] | None:
    # The header describes the sender; a bootstrap-key batch may mix edges, and then the
    # figure cannot be attributed to one of them.
    edges = {r.edge_id for r in readings}
    if backlog is None or len(edges) != 1:
        return None
    return {edges.pop(): backlog}


def _store(services: Any, readings: list[Reading], backlog: dict[str, int] | None) -> StoreResult:
    with services.pool.connection() as conn, conn.transaction():
        result = store_readings(conn, readings, backlog)
        if result.conflicts:
            # All-or-nothing like validation: the exception rolls the transaction back.
            raise _ConflictRefused(result.conflicts)
        return result
