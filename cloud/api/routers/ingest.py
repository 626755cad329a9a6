"""POST /api/v1/ingest: one reading or a batch, from edges and any integrator's hardware.

A batch is all-or-nothing: one invalid reading rejects the whole body with a 4xx naming the
field, and nothing from it is stored. 200 means durably accepted: committed to PostgreSQL,
or (when Kafka is configured) confirmed by the broker with acks=all.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from psycopg import Error as PsycopgError
from starlette.concurrency import run_in_threadpool

from cloud.api.auth import IngestEdge
from cloud.api.deps import Services
from cloud.api.errors import ApiError
from cloud.ingest_producer import KafkaUnavailable
from cloud.storage import store_readings
from shared.message import MessageError, Reading, parse_reading

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


def _parse_body(raw: bytes, max_batch: int) -> tuple[list[dict[str, Any]], bool]:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "$", f"body is not valid JSON: {exc}") from None
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


@router.post(
    "/api/v1/ingest",
    summary="Ingest one reading or a batch",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _INGEST_BODY_SCHEMA}},
        },
        "parameters": [],
    },
    responses={
        200: {"description": "Durably accepted"},
        400: {"description": "Not JSON"},
        401: {"description": "Missing or wrong X-API-KEY"},
        413: {"description": "Body or batch too large"},
        422: {"description": "Invalid reading; `field` names the offending JSON path"},
        503: {"description": "Storage temporarily unavailable; retry after Retry-After"},
    },
)
async def ingest(
    request: Request,
    services: Services,
    key_edge: IngestEdge,
    x_edge_backlog: Annotated[
        int | None,
        Header(ge=0, le=2**62, description="readings still buffered on the sending edge"),
    ] = None,
) -> JSONResponse:
    settings = services.settings
    raw = await _read_body(request, settings.max_body_bytes)
    items, is_batch = _parse_body(raw, settings.max_batch_readings)
    now = datetime.now(UTC)
    # The bootstrap key (RIG_INGEST_API_KEY) may write for any edge, like the prototype's one
    # shared key; a per-edge key writes only its own edge's readings, so a stolen rig's key
    # cannot forge or shadow another rig's sequence numbers.
    bootstrap = key_edge == "default"
    default_edge = "ingest:default" if bootstrap else key_edge

    readings: list[Reading] = []
    needs_seq: list[int] = []
    for i, item in enumerate(items):
        path = f"$.readings[{i}]" if is_batch else "$"
        try:
            reading = parse_reading(
                item, path=path, default_edge_id=default_edge, default_seq=0, now=now
            )
        except MessageError as exc:
            raise ApiError(422, exc.field, exc.problem) from None
        if not bootstrap and reading.edge_id != key_edge:
            raise ApiError(403, f"{path}.edge_id", f"this API key belongs to edge {key_edge!r}")
        if not (isinstance(item, dict) and "seq" in item):
            needs_seq.append(i)
        readings.append(reading)

    try:
        if needs_seq:
            seqs = await run_in_threadpool(_allocate_seqs, services, len(needs_seq))
            for index, seq in zip(needs_seq, seqs, strict=True):
                readings[index].seq = seq
        if services.producer is not None:
            deliveries = await run_in_threadpool(
                services.producer.produce, readings, 20.0, x_edge_backlog
            )
            last = deliveries[-1]
            body: dict[str, Any] = {
                "success": True,
                "accepted": len(readings),
                "topic": last.topic,
                "partition": last.partition,
                "offset": last.offset,
            }
            if is_batch:
                body["deliveries"] = [
                    {"partition": d.partition, "offset": d.offset} for d in deliveries
                ]
            return JSONResponse(body)
        backlog = _backlog_by_edge(readings, x_edge_backlog)
        result = await run_in_threadpool(_store, services, readings, backlog)
    except (PsycopgError, KafkaUnavailable) as exc:
        raise ApiError(
            503, "$", f"storage unavailable: {type(exc).__name__}", retry_after=5
        ) from None
    return JSONResponse(
        {
            "success": True,
            "accepted": result.received,
            "stored": result.inserted,
            "duplicates": result.duplicates,
        }
    )


def _allocate_seqs(services: Any, count: int) -> list[int]:
    with services.pool.connection() as conn:
        rows = conn.execute(
            "SELECT nextval('ingest_seq') FROM generate_series(1, %s)", (count,)
        ).fetchall()
    return [int(r[0]) for r in rows]


def _backlog_by_edge(readings: list[Reading], backlog: int | None) -> dict[str, int] | None:
    # The header describes the sender; a bootstrap-key batch may mix edges, and then the
    # figure cannot be attributed to one of them.
    edges = {r.edge_id for r in readings}
    if backlog is None or len(edges) != 1:
        return None
    return {edges.pop(): backlog}


def _store(services: Any, readings: list[Reading], backlog: dict[str, int] | None) -> Any:
    with services.pool.connection() as conn, conn.transaction():
        return store_readings(conn, readings, backlog)
