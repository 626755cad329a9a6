"""What an admin may configure, validated once: alert rules (what raises an alert), channels
(where notifications go) and silences. The admin API, the store and the evaluator all read
through these models, so an invalid rule never reaches the evaluator and every refusal names
its field (``params.count``, ``config.url``, ...).

Secrets (an SMTP password, a webhook's bearer token) are never stored: a channel names where
the ``rig-cloud alerts`` process reads them (``SecretRef``: an environment variable or a file).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cloud.fielderror import FieldError
from shared.configtypes import SecretRef
from shared.message import CUSTOM_NAME_RE, EDGE_ID_RE, MACHINE_ID_RE

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
RuleKind = Literal[
    "anomaly", "persistence", "predicted", "rul", "edge_offline", "edge_backlog", "buffer_drops"
]
ChannelKind = Literal["webhook", "slack", "email", "alertmanager"]
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")]
HttpUrl = Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=2000)]
Seconds = Annotated[int, Field(ge=1, le=30 * 86_400)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- rule parameters, one model per kind ----------------------------------------------------


class AnomalyParams(_Strict):
    """Any stored anomaly of at least ``min_severity``; the alert stays firing while more
    arrive within ``window_s`` and none of them is resolved by an operator."""

    min_severity: Severity = "warning"
    window_s: Seconds = 300


class PersistenceParams(_Strict):
    """At least ``count`` anomalies of one machine and sensor within ``window_s``."""

    count: int = Field(default=3, ge=2, le=100_000)
    window_s: Seconds = 600
    min_severity: Severity = "info"


class PredictedParams(_Strict):
    """The newest reading of a machine (within ``window_s``) predicts an anomaly with
    ``detection.probability_ahead`` of at least ``probability``."""

    probability: float = Field(default=0.8, gt=0.0, le=1.0)
    window_s: Seconds = 120
    # How long a prediction waits for the anomaly it foresees before it expires (the edge
    # forecasts 10 readings ahead: at the usual 1-10 Hz well within a minute).
    horizon_s: Seconds = 60


class RulParams(_Strict):
    """The newest remaining-life estimate (not older than ``max_age_s``) is under ``hours``."""

    hours: float = Field(default=48.0, gt=0.0, le=1_000_000)
    max_age_s: Seconds = 3600


class EdgeOfflineParams(_Strict):
    """No reading and no backlog report from an edge for ``offline_s``; edges silent for
    longer than ``forget_s`` are decommissioned, not offline, and raise nothing."""

    offline_s: Seconds = 300
    forget_s: Seconds = 7 * 86_400
    edge_id: str | None = Field(default=None, pattern=EDGE_ID_RE.pattern)


class EdgeBacklogParams(_Strict):
    """An edge's reported store-and-forward backlog is at least ``min_backlog`` and has grown
    over the last ``window_s`` (as seen by the evaluator)."""

    min_backlog: int = Field(default=1000, ge=1)
    window_s: Seconds = 300
    edge_id: str | None = Field(default=None, pattern=EDGE_ID_RE.pattern)


class BufferDropsParams(_Strict):
    """An edge reports dropped buffered readings (needs the edge status of issue 13 item 6)."""

    min_drops: int = Field(default=1, ge=1)
    edge_id: str | None = Field(default=None, pattern=EDGE_ID_RE.pattern)


PARAMS: dict[str, type[_Strict]] = {
    "anomaly": AnomalyParams,
    "persistence": PersistenceParams,
    "predicted": PredictedParams,
    "rul": RulParams,
    "edge_offline": EdgeOfflineParams,
    "edge_backlog": EdgeBacklogParams,
    "buffer_drops": BufferDropsParams,
}
# Kinds whose findings are per machine (and may be narrowed to one machine / sensor).
MACHINE_KINDS = frozenset({"anomaly", "persistence", "predicted", "rul"})


class RuleIn(_Strict):
    name: Name
    kind: RuleKind
    machine_id: str | None = Field(default=None, pattern=MACHINE_ID_RE.pattern)
    sensor: str | None = Field(default=None, pattern=CUSTOM_NAME_RE.pattern, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    severity: Severity = "warning"
    channel_ids: list[int] = Field(default_factory=list, max_length=50)
    enabled: bool = True

    def check(self) -> None:
        """FieldError naming what does not fit together (the API answers 422 with it)."""
        if self.kind not in MACHINE_KINDS and (self.machine_id or self.sensor):
            field = "machine_id" if self.machine_id else "sensor"
            raise FieldError(field, f"a {self.kind} rule is about edges (params.edge_id)")
        if self.sensor and self.kind in {"predicted", "rul"}:
            raise FieldError("sensor", f"a {self.kind} rule is about a machine, not one sensor")
        rule_params(self.kind, self.params)


def rule_params(kind: str, params: dict[str, Any]) -> _Strict:
    try:
        return PARAMS[kind].model_validate(params)
    except ValidationError as exc:
        raise _field_error(exc, "params") from None


class RulePatch(_Strict):
    enabled: bool | None = None
    severity: Severity | None = None
    params: dict[str, Any] | None = None
    channel_ids: list[int] | None = Field(default=None, max_length=50)


# --- channels -------------------------------------------------------------------------------


class WebhookConfig(_Strict):
    """POST of the alert as plain JSON (``webhook``) or as a Slack-compatible message
    (``slack``: ``text`` and ``blocks``, which Slack, Mattermost and Rocket.Chat accept)."""

    url: HttpUrl
    bearer: SecretRef | None = None
    timeout_s: float = Field(default=5.0, gt=0, le=60)


class AlertmanagerConfig(_Strict):
    """An Alertmanager (or anything speaking its API): POST ``<url>/api/v2/alerts``."""

    url: HttpUrl
    bearer: SecretRef | None = None
    timeout_s: float = Field(default=5.0, gt=0, le=60)


class EmailConfig(_Strict):
    host: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    # SMTP over TLS from the first byte (port 465); excludes STARTTLS.
    ssl: bool = False
    # A private CA's certificate (PEM) to verify the server with; default: the system's.
    ca_file: Path | None = None
    username: str | None = Field(default=None, min_length=1, max_length=255)
    password: SecretRef | None = None
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=255)
    to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=255)]] = Field(
        min_length=1, max_length=50
    )
    timeout_s: float = Field(default=10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _consistent(self) -> EmailConfig:
        # Messages start with the field: _field_error turns them into its name.
        if self.ssl and self.starttls:
            raise ValueError("starttls: use either ssl (port 465) or starttls, not both")
        if self.password is not None and self.username is None:
            raise ValueError("username: a password needs a username")
        return self


CHANNEL_CONFIGS: dict[str, type[_Strict]] = {
    "webhook": WebhookConfig,
    "slack": WebhookConfig,
    "email": EmailConfig,
    "alertmanager": AlertmanagerConfig,
}


class ChannelIn(_Strict):
    name: Name
    kind: ChannelKind
    config: dict[str, Any]
    enabled: bool = True

    def check(self) -> None:
        channel_config(self.kind, self.config)


def channel_config(kind: str, config: dict[str, Any]) -> _Strict:
    try:
        return CHANNEL_CONFIGS[kind].model_validate(config)
    except ValidationError as exc:
        raise _field_error(exc, "config") from None


class ChannelPatch(_Strict):
    enabled: bool | None = None
    config: dict[str, Any] | None = None


# --- silences -------------------------------------------------------------------------------


class SilenceIn(_Strict):
    """Mutes the alerts it matches (every given field must match; none given: refused)
    until ``ends_at``; notifications meanwhile are recorded as ``silenced``."""

    rule_id: int | None = Field(default=None, ge=1)
    machine_id: str | None = Field(default=None, pattern=MACHINE_ID_RE.pattern)
    sensor: str | None = Field(default=None, pattern=CUSTOM_NAME_RE.pattern, max_length=64)
    starts_at: datetime | None = None
    ends_at: datetime
    comment: str = Field(default="", max_length=2000)

    def check(self) -> None:
        if self.rule_id is None and self.machine_id is None and self.sensor is None:
            raise FieldError("machine_id", "a silence names at least a rule, machine or sensor")
        for name in ("starts_at", "ends_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise FieldError(name, "give a time zone (e.g. 2026-11-29T15:00:00Z)")
        if self.starts_at is not None and self.starts_at >= self.ends_at:
            raise FieldError("ends_at", "must be after starts_at")


def _field_error(exc: ValidationError, prefix: str) -> FieldError:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    # A model validator's message starts with the field it is about ("username: ...").
    head, sep, rest = message.partition(": ")
    if not loc and sep and head.isidentifier():
        loc, message = head, rest
    return FieldError(f"{prefix}.{loc}" if loc else prefix, message)
