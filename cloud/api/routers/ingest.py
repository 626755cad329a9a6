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
- ``ts``/``timestamp`` may be epoch seconds or milliseconds (``shared.message``).

POST /api/v1/ingest/influx: InfluxDB line protocol (Telegraf, gateways), one reading per line,
with the same guards (ingest key and its edge scope, body size, batch limit, 503 +
Retry-After, Idempotency-Key) and one fate per line, reported in ``results``: ``accepted``
(stored, or confirmed by Kafka), ``refused`` (invalid for good, with the reason),
``failed``/``unconfirmed`` (Kafka; resend). Unlike JSON it is not all-or-nothing: Telegraf
sends whatever its inputs gathered, and one odd line must not hold back the rest. The
mapping is in docs/integrations.md: tag ``machine_id`` (``?machine_tag=``) names the
machine, optional tag ``edge_id``; fields are sensors (catalog names are core values, other
snake_case names custom sensors); string and boolean fields are ignored with a reason, the
line's numbers kept. The key ``(edge_id, seq)`` of a line is a hash of its series (edge,
machine, measurement, tags) and timestamp, so Telegraf resending a batch stores nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import zlib
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
import psycopg
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from psycopg import Error as PsycopgError
from psycopg.types.json import Jsonb
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from cloud.aggregator import is_infrastructure_error, is_row_error
from cloud.api.deps import Services
from cloud.api.errors import ApiError
from cloud.api.guards import EdgePrincipal, IngestEdge, machines_refused
from cloud.api.problems import PROBLEM_JSON, problem_members
from cloud.api.schemas import (
    ErrorOut,
    IngestConflictsOut,
    IngestNotTakenOut,
    IngestOut,
    Out,
    Timestamp,
)
from cloud.edge_fleet import parse_header, record_status
from cloud.influx import LineError, Point
from cloud.influx import parse as parse_line_protocol
from cloud.ingest_producer import Delivery, Failure, KafkaUnavailable, Outcome
from cloud.metrics.api import count_ingested
from cloud.scoring import INTEGRATOR_EDGE_PREFIX, mark_client
from cloud.storage import Conflict, StoreResult, store_readings
from shared.catalog import SENSOR_INDEX
from shared.edge_status import MAX_STATUS_BYTES
from shared.failpoints import failpoint
from shared.logs import log_event
from shared.message import (
    EDGE_ID_RE,
    MessageError,
    Reading,
    TimeWindow,
    format_ts,
    parse_reading,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["ingest"])

JSON_ROUTE = "/api/v1/ingest"
INFLUX_ROUTE = "/api/v1/ingest/influx"
CHECK_ROUTE = "/api/v1/ingest/check"

_INGEST_BODY_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {
            "type": "object",
            "description": "One reading. Canonical shape: machine_id, edge_id, seq, ts, values "
            "{core sensor: number}, custom {name: number}. Integrator shape: machine_id plus "
            "sensor fields at top level and custom_sensors; edge_id/seq/timestamp optional. "
            "ts/timestamp: ISO 8601, or epoch seconds (< 1e11) or milliseconds (< 1e14).",
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
        # An RFC 9457 problem like every error (labelled so by ProblemDetailsMiddleware).
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/IngestConflictsOut"}}},
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
    JSON_ROUTE,
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
    x_edge_status: Annotated[
        str | None,
        Header(
            max_length=MAX_STATUS_BYTES,
            description="the sending edge's status report (JSON, shared/edge_status.py), "
            "stored for the fleet page; a malformed one is ignored",
        ),
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
    try:
        answer = await _ingest_items(
            services, key_edge, raw, items, is_batch, x_edge_backlog, idempotency_key
        )
    except ApiError as exc:
        # All-or-nothing: a refused body refuses every reading in it.
        count_ingested(JSON_ROUTE, "refused" if exc.status < 500 else "unavailable", len(items))
        raise
    if x_edge_status is not None:
        await _record_edge_status(services, key_edge, items, x_edge_status)
    return answer


async def _record_edge_status(
    services: Any, principal: EdgePrincipal, items: list[Any], raw: str
) -> None:
    """Store the report of the edge that sent the batch: the per-edge key's edge, or with the
    bootstrap key the one edge every reading names (an integrator's post reports nothing). The
    readings are already accepted: a report that cannot be stored is logged, never an error."""
    edge_id = principal.edge_id
    if edge_id is None and principal.bootstrap:
        named = {item.get("edge_id") for item in items if isinstance(item, dict)}
        edge_id = named.pop() if len(named) == 1 else None
    if not isinstance(edge_id, str) or edge_id.startswith(INTEGRATOR_EDGE_PREFIX):
        return
    status = parse_header(edge_id, raw)
    if status is None:
        return

    def store() -> None:
        with services.pool.connection() as conn, conn.transaction():
            record_status(conn, {edge_id: status})

    try:
        await run_in_threadpool(store)
    except PsycopgError as exc:
        log_event(log, logging.WARNING, "edge status not stored", edge_id=edge_id, error=str(exc))


async def _ingest_items(
    services: Any,
    principal: EdgePrincipal,
    raw: bytes,
    items: list[Any],
    is_batch: bool,
    x_edge_backlog: int | None,
    idempotency_key: str | None,
) -> JSONResponse:
    settings = services.settings
    now = datetime.now(UTC)
    window = settings.window
    # The bootstrap key (RIG_INGEST_API_KEY) may write for any edge, like the prototype's one
    # shared key (docs/manifest.md §3.2); a per-edge key writes only its own edge's
    # readings, so a stolen rig's key cannot forge or shadow another rig's sequence numbers.
    bootstrap = principal.bootstrap
    key_edge = principal.name
    default_edge = "ingest:default" if principal.edge_id is None else principal.edge_id

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
        if not principal.may_write_edge(reading.edge_id):
            raise ApiError(403, f"{path}.edge_id", f"this API key belongs to edge {key_edge!r}")
        if (
            bootstrap
            and reading.detection is not None
            and not ("edge_id" in item and "seq" in item)
        ):
            # Trust rule (cloud.scoring): with the shared key, only a reading numbered by an
            # edge's buffer (its edge_id and seq) carries the edge's verdict; an integrator's
            # detection is marked as the client's and the cloud judges the reading itself.
            reading.detection = mark_client(reading.detection)
        if "seq" not in item:
            needs_seq.append(i)
        readings.append(reading)
    # A per-edge key writes only the machines its edge serves (bound at issue).
    off_limits = await machines_refused(services, principal, {r.machine_id for r in readings})
    if off_limits is not None:
        index = next(i for i, r in enumerate(readings) if r.machine_id == off_limits[0])
        path = f"$.readings[{index}]" if is_batch else "$"
        raise ApiError(403, f"{path}.machine_id", f"machine {off_limits[0]!r}: {off_limits[1]}")

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
        return _conflict_answer(refused.conflicts, is_batch, readings)
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
        count_ingested(JSON_ROUTE, "accepted", len(deliveries))
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
    refused = sum(1 for r in results if r.get("permanent"))
    count_ingested(JSON_ROUTE, "accepted", len(deliveries))
    count_ingested(JSON_ROUTE, "refused", refused)
    count_ingested(JSON_ROUTE, "unavailable", failed + unconfirmed - refused)
    message = f"Kafka did not take {failed + unconfirmed} of {len(outcomes)} readings: " + str(
        first["error"]
    )
    return JSONResponse(
        {
            **problem_members(status, message),
            "success": False,
            "error": message,
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
    count_ingested(JSON_ROUTE, "accepted", result.received)
    return JSONResponse(
        {
            "success": True,
            "accepted": result.received,
            "stored": result.inserted,
            "duplicates": result.duplicates,
        }
    )


def _conflict_answer(
    conflicts: tuple[Conflict, ...], is_batch: bool, readings: list[Reading]
) -> JSONResponse:
    def field(index: int) -> str:
        return f"$.readings[{index}]" if is_batch else "$"

    first = conflicts[0]
    count_ingested(JSON_ROUTE, "refused", len(readings))
    return JSONResponse(
        {
            **problem_members(409, first.reason),
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


class IngestCheckOut(Out):
    """The key is valid (and may write for ``edge_id`` when asked); nothing was stored."""

    key_edge: str = Field(
        description="the edge the key belongs to; 'default': the bootstrap key (any edge)"
    )
    edge_id: str | None = Field(description="the edge asked about (?edge_id=), if any")


@router.get(
    CHECK_ROUTE,
    summary="Check an ingest key (stores nothing)",
    response_model=IngestCheckOut,
    responses={
        401: _RESPONSES[401],
        403: {"model": ErrorOut, "description": "A per-edge key asked about another edge"},
    },
)
async def ingest_check(
    key_edge: IngestEdge,
    edge_id: Annotated[
        str | None,
        Query(
            pattern=EDGE_ID_RE.pattern,
            description="the edge whose readings the caller will send: 403 when this key "
            "may not write them",
        ),
    ] = None,
) -> IngestCheckOut:
    """What ``rig-edge check-config --probe`` asks before deployment: the same key guard and
    edge scope as ``POST /api/v1/ingest``, without a reading to store."""
    if edge_id is not None and not key_edge.may_write_edge(edge_id):
        raise ApiError(403, "edge_id", f"this API key belongs to edge {key_edge.name!r}")
    return IngestCheckOut(key_edge=key_edge.name, edge_id=edge_id)


# --- InfluxDB line protocol -----------------------------------------------------------------

Precision = Literal["ns", "us", "ms", "s"]
_NS_PER_UNIT: dict[str, int] = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_SEQ = 2**63 - 1


class InfluxIgnoredOut(Out):
    """A field of an accepted line that is not stored (a string, a boolean, a value out of
    bounds, a name that is no sensor name), with the reason."""

    field: str
    error: str


class InfluxLineOut(Out):
    """The fate of one line (``line``: its number in the body, 1-based): ``accepted``
    (stored, or confirmed by Kafka at partition/offset), ``refused`` (invalid for good;
    ``field`` and ``error`` say why), ``failed`` or ``unconfirmed`` (Kafka: resend)."""

    line: int
    status: Literal["accepted", "refused", "failed", "unconfirmed"]
    edge_id: str | None
    seq: int | None
    ts: Timestamp | None
    partition: int | None
    offset: int | None
    field: str | None
    error: str | None
    ignored: list[InfluxIgnoredOut]


class InfluxOut(Out):
    """Line protocol: every line's fate. 200 when every line is accepted; 422 when some are
    refused for good (the others are in); 503 + Retry-After when Kafka did not take some
    (resend the body: what is in is recognised by its key and stored once)."""

    success: bool
    status: Literal[200, 422, 503]
    type: str | None = Field(description="RFC 9457 when not 200: about:blank")
    title: str | None = Field(description="RFC 9457 when not 200: the HTTP status phrase")
    detail: str | None = Field(description="RFC 9457 when not 200: the same text as error")
    error: str | None
    field: str | None
    lines: int
    accepted: int
    refused: int
    failed: int
    unconfirmed: int
    duplicates: int = Field(description="without Kafka: lines whose key was already stored")
    results: list[InfluxLineOut]


_INFLUX_EXAMPLE = (
    "modbus,machine_id=A,host=rig-pc-07 temperature=71.2,pressure=10.4,rpm=2950i "
    "1764417600000000000\n"
)


@router.post(
    INFLUX_ROUTE,
    summary="Ingest InfluxDB line protocol (Telegraf, gateways)",
    response_model=InfluxOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/plain": {
                    "schema": {"type": "string", "example": _INFLUX_EXAMPLE},
                    "example": _INFLUX_EXAMPLE,
                }
            },
        }
    },
    responses={
        200: {"description": "Every line accepted"},
        400: {"model": ErrorOut, "description": "Not UTF-8, or a body that does not decompress"},
        401: _RESPONSES[401],
        403: {
            "model": ErrorOut,
            "description": "A per-edge key writing another edge's lines (tag edge_id)",
        },
        413: _RESPONSES[413],
        415: {"model": ErrorOut, "description": "Content-Encoding other than gzip/identity"},
        422: {
            "model": InfluxOut | ErrorOut,
            "description": "Some lines refused for good (`results` says which and why; the "
            "others are in), a body without lines, or an Idempotency-Key reused with "
            "another body",
        },
        503: {
            "model": InfluxOut | ErrorOut,
            "description": "Kafka or storage unavailable; `results` says per line what is in",
        },
    },
)
async def ingest_influx(
    request: Request,
    services: Services,
    key_edge: IngestEdge,
    precision: Annotated[
        Precision, Query(description="unit of the line timestamps (Telegraf writes ns)")
    ] = "ns",
    machine_tag: Annotated[
        str,
        Query(
            min_length=1,
            max_length=64,
            description="the tag whose value is the machine id (e.g. host)",
        ),
    ] = "machine_id",
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
    raw = _decoded(request, await _read_body(request, settings.max_body_bytes), settings)
    if len(raw) > settings.max_body_bytes:
        raise ApiError(
            413, "$", f"decompressed body exceeds the limit of {settings.max_body_bytes} bytes"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "$", f"body is not UTF-8 (byte {exc.start})") from None
    points = parse_line_protocol(text)
    if not points:
        raise ApiError(422, "$", "no line protocol in the body (only blank or # lines)")
    if len(points) > settings.max_batch_readings:
        raise ApiError(
            413, "$", f"{len(points)} lines exceed the batch limit of {settings.max_batch_readings}"
        )
    try:
        return await _ingest_points(
            request, services, key_edge, raw, points, precision, machine_tag, idempotency_key
        )
    except ApiError as exc:
        # Refused or not taken as a whole: every line (and reading) of the body shares it.
        outcome = "refused" if exc.status < 500 else "unavailable"
        readings = sum(1 for p in points if not isinstance(p, LineError))
        count_ingested(INFLUX_ROUTE, outcome, readings, lines=len(points))
        raise


async def _ingest_points(
    request: Request,
    services: Any,
    principal: EdgePrincipal,
    raw: bytes,
    points: list[Point | LineError],
    precision: Precision,
    machine_tag: str,
    idempotency_key: str | None,
) -> JSONResponse:
    settings = services.settings
    bootstrap = principal.bootstrap
    key_edge = principal.name
    default_edge = "ingest:default" if principal.edge_id is None else principal.edge_id
    now = datetime.now(UTC)
    results: list[dict[str, Any]] = []
    readings: list[Reading] = []
    entries: list[dict[str, Any]] = []  # the result entry of each reading
    for point in points:
        if isinstance(point, LineError):
            results.append(_line_entry(point.line, "refused", field="$", error=point.problem))
            continue
        edge_tag = point.tags.get("edge_id")
        if not bootstrap and edge_tag is not None and edge_tag != key_edge:
            raise ApiError(
                403, f"line {point.line}: tag edge_id", f"this API key belongs to edge {key_edge!r}"
            )
        entry, reading = _point_reading(
            point,
            machine_tag=machine_tag,
            default_edge=default_edge,
            unit_ns=_NS_PER_UNIT[precision],
            now=now,
            window=settings.window,
        )
        results.append(entry)
        if reading is not None:
            readings.append(reading)
            entries.append(entry)
    # A per-edge key writes only the machines its edge serves (bound at issue).
    refused = await machines_refused(services, principal, {r.machine_id for r in readings})
    if refused is not None:
        line = next(
            e.get("line")
            for e, r in zip(entries, readings, strict=True)
            if r.machine_id == refused[0]
        )
        raise ApiError(
            403, f"line {line}: tag {machine_tag}", f"machine {refused[0]!r}: {refused[1]}"
        )

    duplicates = 0
    outcomes: list[Outcome] | None = None
    try:
        if idempotency_key is not None and readings:
            # The query decides what the lines mean: part of what "the same body" is.
            body_sha = hashlib.sha256(
                b"influx\0" + request.url.query.encode() + b"\0" + raw
            ).digest()
            await run_in_threadpool(
                _assign_once, services, (key_edge, idempotency_key), body_sha, readings, []
            )
        if readings and services.producer is None:
            stored = await run_in_threadpool(_store_lines, services, readings)
            duplicates = stored.duplicates
            for conflict in stored.conflicts:
                entries[conflict.index].update(
                    status="refused", field="$", error=_safe(conflict.reason)
                )
    except _IdempotencyMismatch:
        raise ApiError(
            422, "Idempotency-Key", "already used with a different body; use a new key"
        ) from None
    except PsycopgError as exc:
        if not is_infrastructure_error(exc) and is_row_error(exc):
            raise ApiError(
                422, "$", _safe(f"refused by the database: {type(exc).__name__}: {exc}")[:500]
            ) from None
        raise ApiError(
            503, "$", f"storage unavailable: {type(exc).__name__}", retry_after=5
        ) from None
    if readings and services.producer is not None:
        try:
            outcomes = await services.producer.produce(
                readings,
                timeout=settings.ingest_delivery_timeout_ms / 1000,
                max_in_flight=settings.ingest_max_in_flight,
            )
        except KafkaUnavailable as exc:
            raise ApiError(503, "$", f"Kafka unavailable: {exc}", retry_after=5) from None
        for entry, outcome in zip(entries, outcomes, strict=True):
            if isinstance(outcome, Delivery):
                entry.update(partition=outcome.partition, offset=outcome.offset)
            elif isinstance(outcome, Failure):
                entry.update(
                    status="refused" if outcome.permanent else "failed",
                    field="$",
                    error=f"Kafka: {outcome.error}",
                )
            else:
                entry.update(status="unconfirmed", error="no broker confirmation in time")
        if any(isinstance(o, Delivery) for o in outcomes):
            failpoint("cloud.ingest.after_produce")
    for entry in entries:
        # ``ts`` and ``seq`` as finally assigned (an Idempotency-Key retry replays them).
        reading = entry.pop("_reading")
        entry.update(seq=reading.seq, ts=format_ts(reading.ts))
    return _influx_answer(results, duplicates, key_edge)


def _decoded(request: Request, raw: bytes, settings: Any) -> bytes:
    """The body without its Content-Encoding (Telegraf's ``content_encoding = "gzip"``),
    never inflated past the body limit plus one byte (a compression bomb stops there)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":
        raise ApiError(415, "Content-Encoding", f"{encoding[:40]!r}: gzip or identity only")
    limit = settings.max_body_bytes
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise ApiError(400, "$", f"body is not valid gzip: {exc}") from None
    if len(out) <= limit and not inflater.eof:
        raise ApiError(400, "$", "gzip body is truncated")
    return out


def _line_entry(line: int, status: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "line": line,
        "status": status,
        "edge_id": None,
        "seq": None,
        "ts": None,
        "partition": None,
        "offset": None,
        "field": None,
        "error": None,
        "ignored": [],
    }
    entry.update(extra)
    return entry


def _series_seq(edge_id: str, machine_id: str, point: Point, ts_ns: int) -> int:
    """The line's ``seq``: 63 bits of a hash of its series and timestamp. The same line sent
    again (Telegraf retries a batch the API answered 503) has the same key and is stored
    once; two series of one machine at one instant (cpu0, cpu1) are two readings."""
    digest = hashlib.blake2b(digest_size=8)
    for part in (edge_id, machine_id, point.measurement, *sorted(point.tags.items()), ts_ns):
        digest.update(repr(part).encode("utf-8", "backslashreplace"))
        digest.update(b"\x1f")
    return int.from_bytes(digest.digest(), "big") & _MAX_SEQ


def _line_field(path: str, machine_tag: str) -> str:
    """A codec path in the terms of a line."""
    if path.startswith("$.machine_id"):
        return f"tag {machine_tag}"
    if path.startswith("$.edge_id"):
        return "tag edge_id"
    if path in ("$.ts", "$.timestamp"):
        return "timestamp"
    if path.startswith("$.custom"):
        return "fields"
    return "$"


def _point_reading(
    point: Point,
    *,
    machine_tag: str,
    default_edge: str,
    unit_ns: int,
    now: datetime,
    window: TimeWindow,
) -> tuple[dict[str, Any], Reading | None]:
    """One line as a reading (validated by ``parse_reading``, the one definition of a
    valid reading) and its result entry; (refused entry, None) when nothing of it can be
    stored. A field the codec refuses is left out with the reason, the others kept."""
    line = point.line
    machine_id = point.tags.get(machine_tag)
    if machine_id is None:
        return _line_entry(
            line,
            "refused",
            field=f"tag {_safe(machine_tag)}",
            error="missing: the tag that names the machine (choose it with ?machine_tag=)",
        ), None
    edge_id = point.tags.get("edge_id", default_edge)
    ignored: list[dict[str, str]] = []
    values: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for name, value in point.fields.items():
        if isinstance(value, bool | str):
            kind = "a boolean" if isinstance(value, bool) else "a string"
            ignored.append(
                {"field": _safe(name), "error": f"{kind} is not a measurement; send a number"}
            )
        elif name in SENSOR_INDEX:
            values[name] = value
        else:
            custom[name] = value
    if point.timestamp is None:
        ts = now
        ts_ns = int((now - _EPOCH).total_seconds()) * 1_000_000_000 + now.microsecond * 1000
    else:
        ts_ns = point.timestamp * unit_ns
        try:
            ts = _EPOCH + timedelta(microseconds=ts_ns // 1000)
        except OverflowError:
            return _line_entry(
                line, "refused", field="timestamp", error="timestamp out of range"
            ), None
    seq = _series_seq(edge_id, machine_id, point, ts_ns)
    while values or custom:
        doc = {
            "machine_id": machine_id,
            "edge_id": edge_id,
            "seq": seq,
            "values": values,
            "custom": custom,
        }
        try:
            reading = parse_reading(doc, default_ts=ts, now=now, window=window)
        except MessageError as exc:
            # A value or a name the codec refuses: that field only.
            for prefix, group in (("$.values.", values), ("$.custom.", custom)):
                bad = exc.field[len(prefix) :] if exc.field.startswith(prefix) else None
                if bad is not None and bad in group:
                    del group[bad]
                    ignored.append({"field": _safe(bad), "error": _safe(exc.problem)})
                    break
            else:
                return _line_entry(
                    line,
                    "refused",
                    field=_line_field(exc.field, machine_tag),
                    error=_safe(exc.problem),
                    ignored=ignored,
                ), None
            continue
        entry = _line_entry(
            line, "accepted", edge_id=reading.edge_id, seq=reading.seq, ignored=ignored
        )
        entry["_reading"] = reading
        return entry, reading
    return _line_entry(
        line,
        "refused",
        field="fields",
        error="no field with a number to store"
        + (f" ({ignored[0]['field']}: {ignored[0]['error']})" if ignored else ""),
        ignored=ignored,
    ), None


def _store_lines(services: Any, readings: list[Reading]) -> StoreResult:
    # Not all-or-nothing: a line whose key is stored with other content is refused (its
    # conflict is in the result), the others commit.
    with services.pool.connection() as conn, conn.transaction():
        return store_readings(conn, readings)


_LINE_OUTCOME = {
    "accepted": "accepted",
    "refused": "refused",
    "failed": "unavailable",
    "unconfirmed": "unavailable",
}


def _influx_answer(results: list[dict[str, Any]], duplicates: int, edge: str) -> JSONResponse:
    counts = {s: 0 for s in ("accepted", "refused", "failed", "unconfirmed")}
    for entry in results:
        counts[entry["status"]] += 1
    transient = counts["failed"] + counts["unconfirmed"]
    # Lines and the readings among them (a line refused before it named one has no seq).
    lines: dict[str, int] = {"accepted": 0, "refused": 0, "unavailable": 0}
    readings = dict(lines)
    for entry in results:
        outcome = _LINE_OUTCOME[entry["status"]]
        lines[outcome] += 1
        readings[outcome] += entry["seq"] is not None
    for outcome, number in lines.items():
        count_ingested(INFLUX_ROUTE, outcome, readings[outcome], lines=number)
    status = 503 if transient else 422 if counts["refused"] else 200
    first = next((e for e in results if e["status"] != "accepted"), None)
    body: dict[str, Any] = {
        "success": status == 200,
        "status": status,
        "type": None,
        "title": None,
        "detail": None,
        "error": None,
        "field": None,
        "lines": len(results),
        **counts,
        "duplicates": duplicates,
        "results": results,
    }
    if first is not None:
        not_in = len(results) - counts["accepted"]
        body["error"] = f"{not_in} of {len(results)} lines not accepted: {first['error']}"
        body["field"] = f"line {first['line']}: {first['field'] or '$'}"
        # An RFC 9457 problem like every error answer, the lines' fates its extension.
        body.update(problem_members(status, body["error"]))
        if counts["refused"]:
            # Telegraf does not read answers: the operator finds refusals in the log.
            log_event(
                log,
                logging.WARNING,
                "line protocol refused",
                edge=edge,
                refused=counts["refused"],
                lines=len(results),
                first_line=first["line"],
                first_error=str(first["error"])[:300],
            )
    return JSONResponse(
        body, status_code=status, headers={"Retry-After": "5"} if status == 503 else None
    )
