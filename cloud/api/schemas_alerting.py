"""Response and request models of the anomaly workflow and of alerting (cloud/alerting/).

Kept beside ``cloud/api/schemas.py`` (same ``Out`` base, same conventions) so the two
features can change without touching the shared module's other models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud.api.schemas import AnomalyOut, Out, ReadingOut, Timestamp

State = Literal["open", "acknowledged", "resolved"]
Severity = Literal["info", "warning", "critical"]


class AnomalyWorkflowOut(AnomalyOut):
    severity: Severity
    state: State
    acknowledged_by: str | None
    acknowledged_at: Timestamp | None
    ack_note: str | None
    resolved_by: str | None
    resolved_at: Timestamp | None
    resolution_note: str | None


class AnomalyFeedOut(Out):
    anomalies: list[AnomalyWorkflowOut] = Field(description="newest first")
    next: str | None = Field(description="cursor for `before`; null: last page")


class AnomalyWorkflowDetailOut(AnomalyWorkflowOut):
    details: dict[str, Any] | None
    reading: ReadingOut | None = Field(description="null when the reading was dropped since")


class WorkflowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=2000, description="why, what was done")


class WindowPointOut(Out):
    timestamp: Timestamp
    values: dict[str, float]


class ContributionOut(Out):
    sensor: str
    share: float


class JudgedByModelOut(Out):
    method: str
    model_version: str | None
    registry_version: int | None
    strategy: str | None
    metrics: dict[str, Any]
    activated_at: Timestamp | None


class ThresholdNowOut(Out):
    critical_low: float | None
    critical_high: float | None
    warn_low: float | None
    warn_high: float | None
    source: str


class SimilarPastOut(Out):
    id: int
    timestamp: Timestamp
    method: str
    score: float
    severity: Severity
    state: State
    similarity: float
    sensors: list[str]
    note: str | None


class AnomalyContextOut(Out):
    id: int
    machine_id: str
    window_s: int
    window: list[WindowPointOut] = Field(description="readings around it, oldest first")
    contributions: list[ContributionOut] = Field(description="largest share first")
    model: JudgedByModelOut | None = Field(description="null: judged by thresholds alone")
    thresholds: dict[str, ThresholdNowOut] = Field(
        description="limits in force now for the contributing sensors"
    )
    judged_by: Any = Field(description="what the detection says it used, when it says")
    similar: list[SimilarPastOut] = Field(description="same machine, most similar first")


# --- alerting -------------------------------------------------------------------------------


class RuleOut(Out):
    id: int
    name: str
    kind: str
    machine_id: str | None
    sensor: str | None
    params: dict[str, Any]
    severity: Severity
    channel_ids: list[int]
    enabled: bool


class ChannelOut(Out):
    id: int
    name: str
    kind: str
    config: dict[str, Any] = Field(description="secrets appear as references, never values")
    enabled: bool


class SilenceOut(Out):
    id: int
    rule_id: int | None
    machine_id: str | None
    sensor: str | None
    starts_at: Timestamp
    ends_at: Timestamp
    comment: str
    created_by: str | None
    active: bool


class NotificationOut(Out):
    id: int
    channel_id: int | None
    channel_name: str
    event: Literal["firing", "update", "resolved"]
    status: Literal["pending", "sent", "failed", "silenced"]
    attempts: int
    last_error: str | None
    created_at: Timestamp
    sent_at: Timestamp | None
    silence_id: int | None


class AlertOut(Out):
    id: int
    group_key: str
    rule_id: int | None
    rule_name: str
    kind: str
    machine_id: str | None
    sensor: str | None
    edge_id: str | None
    severity: Severity
    status: Literal["firing", "resolved"]
    summary: str
    occurrences: int
    first_anomaly_id: int | None
    last_anomaly_id: int | None
    started_at: Timestamp
    updated_at: Timestamp
    resolved_at: Timestamp | None
    notifications: list[NotificationOut]


class AlertListOut(Out):
    alerts: list[AlertOut] = Field(description="newest first")


class RuleListOut(Out):
    rules: list[RuleOut]


class ChannelListOut(Out):
    channels: list[ChannelOut]


class SilenceListOut(Out):
    silences: list[SilenceOut] = Field(description="latest ending first")
