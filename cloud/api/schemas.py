"""Response bodies of the API, as ``/openapi.json`` describes them.

The models describe what the endpoints have always returned (the dashboard's JavaScript and
integrators read these exact field names); they do not reshape it. Two rules keep a model
honest about its endpoint:

- ``extra="forbid"``: a key the model does not know fails validation instead of being
  dropped silently from the answer;
- no defaults: every key is required (``None`` where the value may be null), so a key an
  endpoint stops sending fails validation too.

FastAPI validates what an endpoint returns against its ``response_model``. The endpoints that
serialise with orjson for speed (stats, machines, latest readings, history) return a ready
``Response``, which FastAPI passes through; ``cloud/api/test_response_models.py`` checks those
bodies against their models.

Timestamps are strings: RFC 3339 in UTC with microseconds and ``Z`` (``format_ts``) for
readings and what derives from them, ``isoformat()`` (``+00:00``) for the administrative
records (users, keys, models, jobs), as they always were.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud.accounts import Role
from shared.catalog import Category

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class Out(BaseModel):
    """Base of every response model: unknown keys are an error (see the module text)."""

    model_config = ConfigDict(extra="forbid")


# --- errors ---------------------------------------------------------------------------------


class Problem(Out):
    field: str
    error: str


class ErrorOut(BaseModel):
    """Every error answer: RFC 9457 problem details (``application/problem+json``) with the
    API's own members. ``field`` names what the client sent (``password``, ``limit``,
    ``$.readings[3].temperature``; ``$`` for the request as a whole); ``error`` repeats
    ``detail``. Some answers carry more: ``problems`` (every invalid field of a request),
    ingest's ``conflicts`` and ``results``."""

    type: str = Field(description="RFC 9457: about:blank (the status says what kind)")
    title: str = Field(description="RFC 9457: the HTTP status phrase")
    detail: str = Field(description="RFC 9457: what went wrong (the same text as error)")
    error: str
    field: str
    status: int
    problems: list[Problem] | None = Field(
        default=None, description="422 from request validation: every invalid field"
    )


# --- health ---------------------------------------------------------------------------------


class HealthOut(Out):
    status: Literal["ok"]


class ReadyOut(Out):
    status: Literal["ready", "not ready"]
    database: bool
    kafka: bool = Field(description="a Kafka producer is configured (ingest goes to Kafka)")


# --- users and keys -------------------------------------------------------------------------


class UserOut(Out):
    username: str
    role: Role
    machines: list[str] | None = Field(description="null: every machine")


class LoginOut(UserOut):
    token: str = Field(description="for `Authorization: Bearer`; the same as the cookie")


class UserRecordOut(UserOut):
    disabled: bool
    created_at: Timestamp


class UsersOut(Out):
    users: list[UserRecordOut]


class EdgeKeyOut(Out):
    key_id: str
    edge_id: str
    created_at: Timestamp
    created_by: str | None
    last_used: Timestamp | None
    revoked_at: Timestamp | None
    machines: list[str] | None = Field(
        description="the machines the key may touch; null: issued unbound"
    )


class EdgeKeysOut(Out):
    keys: list[EdgeKeyOut]


class NewEdgeKeyOut(Out):
    edge_id: str
    key_id: str
    api_key: str = Field(description="shown once; only its SHA-256 is stored")
    machines: list[str] | None = Field(description="the machines the key may touch; null: unbound")


# --- sensors --------------------------------------------------------------------------------


class CatalogSensorOut(Out):
    name: str
    unit: str
    category: Category
    typical: float
    min: float
    max: float
    critical_low: float | None
    critical_high: float | None
    warn_low: float | None
    warn_high: float | None
    priority: bool = Field(description="one of the 8 tiles of the overview")


class CatalogOut(Out):
    sensors: list[CatalogSensorOut]


class CustomSensorOut(Out):
    name: str
    first_seen: Timestamp | None = Field(description="null: registered, never received")
    last_seen: Timestamp | None
    first_machine: str | None = Field(description="null also when the caller may not see it")
    machines: list[str] = Field(description="the machines that sent it (those the caller sees)")
    count: int
    min: float | None
    max: float | None
    mean: float | None
    unit: str | None
    category: str | None
    description: str | None
    confirmed: bool


class CustomSensorsOut(Out):
    custom_sensors: list[CustomSensorOut]


# --- thresholds -----------------------------------------------------------------------------


class ThresholdOut(Out):
    critical_low: float | None
    critical_high: float | None
    warn_low: float | None
    warn_high: float | None
    source: Literal["default", "fleet", "machine"] = Field(
        description="where the values come from: the catalog, the fleet-wide or the "
        "machine's override"
    )


class ThresholdTableOut(Out):
    machine_id: str | None = Field(description="null: the fleet-wide table")
    thresholds: dict[str, ThresholdOut] = Field(description="by sensor name")


class ThresholdSetOut(ThresholdOut):
    machine_id: str | None
    sensor: str


class ThresholdClearedOut(Out):
    machine_id: str | None
    sensor: str
    entry: ThresholdOut | None = Field(description="what applies now; null: no threshold")


# --- readings, machines, history ------------------------------------------------------------


class ReadingOut(Out):
    """A stored reading, in the shape the live stream pushes too."""

    machine_id: str
    edge_id: str
    seq: int
    timestamp: Timestamp
    values: dict[str, float] = Field(description="core sensors with a value")
    custom_sensors: dict[str, float]
    quality: dict[str, Literal["good", "bad", "uncertain"]] = Field(
        description="only the sensors whose quality is not good"
    )
    detection: dict[str, Any] | None = Field(
        description="the edge's detection result (wire format, shared/message.py)"
    )


class MachineOut(Out):
    machine_id: str
    first_seen: Timestamp
    total_readings: int
    last_timestamp: Timestamp | None


class MachinesOut(Out):
    machines: list[MachineOut]


class LatestOut(Out):
    machine_id: str
    readings: list[ReadingOut] = Field(description="oldest first")


class BucketOut(Out):
    t: Timestamp = Field(description="start of the bucket")
    min: float
    max: float
    avg: float
    n: int = Field(description="readings in the bucket")


class HistoryOut(Out):
    machine_id: str
    sensor: str
    from_: Timestamp = Field(alias="from")
    to: Timestamp
    bucket_s: float
    resolution: Literal["minute", "raw"] = Field(
        description="minute: from the per-minute rollups; raw: from the readings"
    )
    points: list[BucketOut] = Field(description="buckets without readings are left out")


# --- stats ----------------------------------------------------------------------------------


class LatencyOut(Out):
    p50: float | None
    p95: float | None


class LagOut(Out):
    group: str
    topic: str
    partition: int
    lag: int
    reported_at: Timestamp


class EdgeStatsOut(Out):
    last_seen: Timestamp
    backlog: int | None = Field(description="readings buffered on the rig, as it last reported")
    backlog_reported_at: Timestamp | None


class MachineStatsOut(Out):
    total_readings: int
    last_timestamp: Timestamp | None
    edge_id: str | None
    seq: int | None
    latest: dict[str, float] = Field(description="core sensor values of the newest reading")
    custom: dict[str, float]
    quality: dict[str, str]
    detection: dict[str, Any] | None


class StatsOut(Out):
    total_readings: int
    messages_per_second: float
    window_s: int
    latency_ms: LatencyOut
    consumer_lag: int | None = Field(
        description="summed over partitions; null: no aggregator reported in the last minute"
    )
    consumer_lag_partitions: list[LagOut]
    edges: dict[str, EdgeStatsOut] = Field(description="by edge id; empty for scoped users")
    machines: dict[str, MachineStatsOut] = Field(description="by machine id")
    computed_at: Timestamp


# --- anomalies ------------------------------------------------------------------------------


class AnomalyOut(Out):
    id: int
    machine_id: str
    edge_id: str
    seq: int
    timestamp: Timestamp = Field(description="the reading's time")
    method: str
    score: float
    sensors: list[str]
    detected_at: Timestamp


class AnomalyPageOut(Out):
    anomalies: list[AnomalyOut] = Field(description="newest first")
    next: str | None = Field(description="cursor for `before`; null: last page")


class AnomalyDetailOut(AnomalyOut):
    details: dict[str, Any] | None
    reading: ReadingOut | None = Field(description="null when the reading was dropped since")


# --- models (detectors) ---------------------------------------------------------------------


class ModelOut(Out):
    id: int
    machine_id: str
    version: int
    status: Literal["candidate", "active", "rejected", "retired"]
    strategy: str
    metrics: dict[str, Any]
    baseline_metrics: dict[str, Any] | None
    reason: str | None
    trained_from: Timestamp | None
    trained_to: Timestamp | None
    training_rows: int | None
    manifest: dict[str, Any]
    bundle_sha256: str
    created_by: str | None
    created_at: Timestamp
    activated_at: Timestamp | None
    bundle_bytes: int


class ModelsOut(Out):
    models: list[ModelOut] = Field(description="by machine, newest version first")


class RetrainOut(Out):
    job_id: int
    status_url: str


class TrainingJobOut(Out):
    id: int
    machine_id: str
    requested_by: str | None
    requested_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    status: Literal["queued", "running", "done", "failed"]
    model_id: int | None
    error: str | None


class ModelStatementOut(Out):
    """A signed model statement: ``statement`` is the exact JSON text signed (machine, kind,
    model id, version, bundle SHA-256, issue and expiry times, deploy or rollback)."""

    statement: str
    algorithm: str
    key_id: str
    signature: str


class EdgeModelOut(Out):
    model_id: int
    machine_id: str
    version: int
    strategy: str
    bundle_sha256: str
    bundle_url: str
    # Signed model statement (shared/model_statement.py); null: registered without one.
    statement: ModelStatementOut | None


class PredictionOut(Out):
    timestamp: Timestamp
    probability_ahead: float | None
    is_anomaly: bool | None
    score: float | None
    method: str | None
    model_version: str | None


class PredictionsOut(Out):
    predictions: dict[str, PredictionOut] = Field(description="by machine id")


# --- ingest ---------------------------------------------------------------------------------
# Ready for cloud/api/routers/ingest.py, which builds these bodies by hand today.


class IngestKeyOut(Out):
    edge_id: str
    seq: int
    ts: Timestamp


class IngestStoredOut(Out):
    """Without Kafka: committed to PostgreSQL."""

    success: Literal[True]
    accepted: int
    stored: int
    duplicates: int = Field(description="readings whose (edge_id, seq) was already stored")


class DeliveryOut(Out):
    partition: int
    offset: int


class IngestProducedOut(Out):
    """With Kafka: confirmed by the broker (acks=all). ``deliveries`` for a batch only;
    ``keys`` is one key for a single reading, a list for a batch."""

    success: Literal[True]
    accepted: int
    topic: str
    partition: int
    offset: int
    deliveries: list[DeliveryOut] | None = None
    keys: IngestKeyOut | list[IngestKeyOut]


IngestOut = IngestStoredOut | IngestProducedOut


class IngestConflictOut(Out):
    """One reading of a 409: its key is stored with other content."""

    field: str
    error: str
    stored: dict[str, Any] = Field(
        description="the stored version (wire shape; only its key and ts if its row is gone)"
    )
    received: dict[str, Any] = Field(description="this request's version (wire shape)")


class IngestConflictsOut(Out):
    """409 without Kafka: nothing of the body is stored; the error names the first
    conflict, ``conflicts`` every one. An RFC 9457 problem (``application/problem+json``)."""

    type: str = Field(description="RFC 9457: about:blank")
    title: str = Field(description="RFC 9457: the HTTP status phrase")
    detail: str = Field(description="RFC 9457: the same text as error")
    error: str
    field: str
    status: Literal[409]
    conflicts: list[IngestConflictOut]


class IngestResultOut(Out):
    """Per reading of a partly produced body: ``accepted`` (in the topic at partition,
    offset), ``failed`` (not in it; ``permanent``: resending cannot help) or ``unconfirmed``
    (no broker answer in time: may or may not be in)."""

    field: str
    edge_id: str
    seq: int
    ts: Timestamp
    status: Literal["accepted", "failed", "unconfirmed"]
    partition: int | None = None
    offset: int | None = None
    error: str | None = None
    permanent: bool | None = None


class IngestNotTakenOut(Out):
    """With Kafka, when the broker did not take every reading: 422 if one was refused for
    good (too large, invalid), else 503 with Retry-After. An RFC 9457 problem
    (``application/problem+json``); ``results`` is its extension."""

    type: str = Field(description="RFC 9457: about:blank")
    title: str = Field(description="RFC 9457: the HTTP status phrase")
    detail: str = Field(description="RFC 9457: the same text as error")
    success: Literal[False]
    error: str
    field: str
    status: Literal[422, 503]
    accepted: int
    failed: int
    unconfirmed: int
    results: list[IngestResultOut]


# --- AI assistant (cloud/assistant/) -------------------------------------------------------


class ProvenanceOut(Out):
    """Where a proposed value came from in the uploaded file."""

    page: int | None
    line: int | None = Field(description="line on the page; null for a JSON field")
    text: str | None = Field(description="the file's text the value was read from")
    rule: str | None = Field(description="how the value was derived when not stated as such")
    verified: bool | None = Field(description="false: the model's citation is not in the file")


class SpecSensorOut(Out):
    """A proposed custom sensor (docs/manifest.md §2.2's fields and more), with the problems
    that must be fixed before it can be confirmed."""

    sensor_name: str | None
    min_range: float | None
    max_range: float | None
    unit: str | None
    low_threshold: float | None
    high_threshold: float | None
    category: str | None
    description: str | None
    accuracy: str | None
    output_signal: str | None
    provenance: dict[str, ProvenanceOut] = Field(description="by field name")
    problems: list[Problem]


class SpecProposalOut(Out):
    proposal_id: int
    status: Literal["pending", "confirmed", "discarded"]
    created_at: Timestamp
    created_by: str | None
    decided_by: str | None
    decided_at: Timestamp | None
    filename: str
    kind: Literal["pdf", "csv", "txt", "json"]
    pages_read: int
    pages_total: int
    path: Literal["offline", "model"] = Field(description="what produced the proposal")
    model: str | None = Field(description="the model that answered (path 'model')")
    note: str | None = Field(description="why the model's answer was not used, if it was not")
    sensors: list[SpecSensorOut]
    warnings: list[str]
    problems: list[Problem] = Field(description="every sensor's problems")


class AppliedSensorOut(Out):
    name: str
    unit: str | None
    category: str | None
    confirmed: bool
    thresholds: ThresholdOut | None
    machine_id: str | None = Field(description="null: the thresholds apply fleet-wide")


class SpecDecisionOut(Out):
    proposal_id: int
    status: Literal["confirmed", "discarded"]
    applied: list[AppliedSensorOut]


class AssistantStatusOut(Out):
    mode: Literal["model", "offline"] = Field(description="model: a provider is configured")
    model_parsing: str | None
    model_reports: str | None
    max_upload_bytes: int


class ReportCauseOut(Out):
    cause: str
    failure_mode: str | None = Field(description="id in cloud/assistant/failure_modes.yaml")
    likelihood: float
    evidence: list[str]


class ReportConfidenceOut(Out):
    level: Literal["low", "medium", "high"]
    score: float
    why: str


class ReportSensorOut(Out):
    sensor: str
    share: float | None
    unit: str | None
    category: str | None
    custom: bool
    value: float | None = Field(description="in the anomalous reading")
    direction: Literal["high", "low"] | None
    baseline_mean: float | None
    baseline_std: float | None
    z: float | None
    trend_per_min: float | None
    window_min: float | None
    window_max: float | None
    samples: int
    threshold_state: Literal["nominal", "warning", "critical"] | None
    thresholds: ThresholdOut | None


class CitedReadingOut(Out):
    sensor: str
    timestamp: Timestamp
    value: float
    unit: str | None
    what: str


class SimilarAnomalyOut(Out):
    id: int
    machine_id: str
    timestamp: Timestamp
    method: str
    score: float | None
    similarity: float | None
    sensors: list[str]
    note: str | None = Field(
        description="what operators noted when they resolved (or acknowledged) it"
    )
    state: Literal["open", "acknowledged", "resolved"]
    noted_by: str | None


class SimilarAnomaliesOut(Out):
    machine: list[SimilarAnomalyOut]
    fleet: list[SimilarAnomalyOut]


class ThresholdChangeOut(Out):
    sensor: str
    scope: str
    critical_low: float | None
    critical_high: float | None
    changed_at: Timestamp
    changed_by: str | None
    after_anomaly: bool


class ReportBodyOut(Out):
    summary: str
    likely_causes: list[ReportCauseOut] = Field(description="most likely first")
    recommended_actions: list[str]
    confidence: ReportConfidenceOut
    contributing_sensors: list[ReportSensorOut]
    readings_cited: list[CitedReadingOut]
    similar_anomalies: SimilarAnomaliesOut
    threshold_changes: list[ThresholdChangeOut]
    model_in_service: dict[str, Any] | None
    remaining_life: dict[str, Any] | None
    window: dict[str, Any]


class ReportAnomalyOut(Out):
    id: int
    machine_id: str
    edge_id: str
    timestamp: Timestamp
    method: str
    score: float | None
    sensors: list[str]
    missing_sensors: list[str]
    probability_ahead: float | None


class ReportOut(Out):
    anomaly_id: int
    version: int
    path: Literal["offline", "model"] = Field(description="what wrote the report")
    model: str | None
    note: str | None = Field(description="why the model's answer was not used, if it was not")
    created_by: str | None
    created_at: Timestamp
    machine_id: str
    anomaly: ReportAnomalyOut
    report: ReportBodyOut


class ReportVersionOut(Out):
    version: int
    path: Literal["offline", "model"]
    model: str | None
    note: str | None
    created_by: str | None
    created_at: Timestamp


class ReportVersionsOut(Out):
    anomaly_id: int
    versions: list[ReportVersionOut] = Field(description="newest first")
    report: ReportOut | None = Field(
        description="the requested version (default: the newest); null: no report yet"
    )


class SpecProposalsOut(Out):
    proposals: list[SpecProposalOut] = Field(description="newest first")


class CustomSensorSpecOut(Out):
    """What a confirmed spec sheet says of a custom sensor (nulls: none confirmed yet)."""

    name: str
    min_range: float | None
    max_range: float | None
    accuracy: str | None
    output_signal: str | None
    provenance: dict[str, ProvenanceOut] = Field(description="by field name")
    proposal_id: int | None
    updated_by: str | None
    updated_at: Timestamp | None
