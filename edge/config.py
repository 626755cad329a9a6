"""The edge daemon's one YAML config file, validated at load.

See deploy/edge-systemd/edge.example.yaml for an annotated example, and each input's
``edge/inputs/<kind>/sample.yaml``. The ``inputs:`` section has one key per registered input
type (``edge.inputs.registry``); its model is built from the registry, so an input type added
there is configurable without a change here.
"""

from __future__ import annotations

import functools
import logging
import math
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    SerializeAsAny,
    create_model,
    field_validator,
    model_validator,
)

from edge.inputs import registry
from edge.inputs.base import InputConfig
from edge.outputs.http.config import ApiKeySource, HttpOutputConfig
from edge.outputs.kafka.config import KafkaOutputConfig
from shared.catalog import SENSORS_BY_NAME, Thresholds
from shared.configfile import ConfigError, load_yaml_model
from shared.configtypes import SecretRef, StrictModel
from shared.logs import log_event
from shared.message import EDGE_ID_RE, MACHINE_ID_RE, TimeWindow

log = logging.getLogger(__name__)


class BufferConfig(StrictModel):
    path: Path = Path("/var/lib/rig-edge/buffer.db")
    max_bytes: int = Field(default=1 << 30, ge=1 << 16, description="Disk cap; oldest dropped")
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    # Drop-oldest also starts when the file system has less than this free, so the disk never
    # fills up under the buffer (whatever else writes to it).
    min_free_bytes: int = Field(default=256 << 20, ge=0)
    # The rejected table (readings refused for good, kept for a technician) is capped too.
    max_rejected_bytes: int = Field(default=64 << 20, ge=0)
    # Digests of recent MQTT messages, committed with their readings, so a message the broker
    # redelivers after a crash is recognised instead of stored twice.
    recent_message_keys: int = Field(default=100_000, ge=0, le=10_000_000)
    # Readings acquired but not yet committed, held in memory while commits fail (disk full,
    # I/O errors). Beyond this, readings of polled sources are dropped and counted; MQTT
    # messages are left unacknowledged so the broker keeps them.
    max_pending_readings: int = Field(default=100_000, ge=100, le=10_000_000)


class MetricsConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535, description="0 disables the endpoint")


class HealthConfig(StrictModel):
    """When /healthz (and the systemd watchdog) call the pipeline unhealthy."""

    # Readings waiting longer than this for their commit make the edge unhealthy.
    commit_stall_s: float = Field(default=10.0, gt=0, le=3600)
    # A forwarding round that takes longer than the output's own timeout plus this is stuck.
    forwarder_stall_s: float = Field(default=30.0, gt=0, le=3600)


class TimeWindowConfig(StrictModel):
    """Device timestamps the edge accepts; outside, the edge's receive time is used instead.
    Keep it within the cloud's window (the defaults are the cloud's), or the cloud refuses
    what the edge let through."""

    max_age_days: float = Field(default=400.0, gt=0, le=36_500)
    max_ahead_s: float = Field(default=600.0, ge=0, le=31_536_000)

    def window(self) -> TimeWindow:
        return TimeWindow(
            max_age=timedelta(days=self.max_age_days), max_ahead=timedelta(seconds=self.max_ahead_s)
        )


class InputsConfig(StrictModel):
    """The ``inputs:`` section: per input type (``modbus: [...]``, ``mqtt: [...]``) a list of
    that type's config entries. The model with one field per registered type is
    ``inputs_model()``; this base holds what works for any of them."""

    @model_validator(mode="before")
    @classmethod
    def _known_kinds(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = cls.model_fields
            unknown = sorted(str(k) for k in data if k not in known)
            if unknown:
                raise ValueError(
                    f"unknown input type(s) {', '.join(unknown)}; "
                    f"the registered types are {', '.join(known) or 'none'}"
                )
        return data

    def by_kind(self) -> dict[str, list[InputConfig]]:
        return {kind: list(getattr(self, kind)) for kind in type(self).model_fields}

    def of_kind(self, kind: str) -> list[InputConfig]:
        return self.by_kind().get(kind, [])

    def all(self) -> list[InputConfig]:
        return [entry for entries in self.by_kind().values() for entry in entries]

    def machines(self) -> list[tuple[str, str]]:
        """(machine id, input name) for inputs that name their machines up front."""
        return [(machine, entry.name) for entry in self.all() for machine in entry.machine_ids()]


@functools.cache
def _inputs_model(version: int) -> type[InputsConfig]:
    fields: dict[str, Any] = {
        kind: (list.__class_getitem__(entry.config_model()), Field(default_factory=list))
        for kind, entry in registry.input_types().items()
    }
    return create_model("InputsConfig", __base__=InputsConfig, **fields)


def inputs_model() -> type[InputsConfig]:
    """The ``inputs:`` model for the input types registered now."""
    return _inputs_model(registry.version())


class ForwardingConfig(StrictModel):
    retry_initial_s: float = Field(default=0.5, gt=0, le=60)
    retry_max_s: float = Field(default=30.0, gt=0, le=3600)
    shutdown_flush_s: float = Field(default=5.0, ge=0, le=300)
    # How often the edge's status report (version, backlog, drops, input health, models and
    # thresholds in service) travels to the cloud with a batch, for the fleet page.
    status_interval_s: float = Field(default=10.0, ge=1, le=3600)


OutputConfig = Annotated[KafkaOutputConfig | HttpOutputConfig, Field(discriminator="kind")]


class ModelsConfig(ApiKeySource):
    """ML detectors from the cloud: polled, verified with the cloud's public key, hot-swapped.
    Without this section the edge runs threshold checks only. The per-edge API key is named
    as for the HTTP output (``api_key_env``/``api_key_file``)."""

    cloud_url: str = Field(pattern=r"^https?://", description="The cloud API's base URL")
    # One key (the setting before rotation existed) or a small set (``public_key_files``):
    # during a rotation edges trust the old and the new key, found by key id.
    public_key_file: Path | None = Field(
        default=None, description="Ed25519 public key that signs model bundles"
    )
    public_key_files: list[Path] = Field(
        default_factory=list,
        max_length=8,
        description="Trusted Ed25519 public keys (key rotation), beside public_key_file",
    )
    # A signed statement (shared/model_statement.py) binds a bundle to this machine, a
    # version that only moves forward and an expiry. false: a bundle from a cloud that
    # signs no statements yet is accepted with a warning (the upgrade path); a statement
    # that is present is checked all the same.
    require_statement: bool = False
    directory: Path = Path("/var/lib/rig-edge/models")
    poll_interval_s: float = Field(default=300.0, ge=1.0, le=86_400.0)
    timeout_s: float = Field(default=30.0, gt=0.0, le=600.0)
    strategy: str | None = Field(default=None, description="null: the bundle's default")
    ca_file: Path | None = None
    # Download cap for one bundle: the models directory shares the disk with the buffer.
    max_bundle_bytes: int = Field(default=64 << 20, ge=1 << 20, le=4 << 30)
    # Thresholds are a small JSON table per machine, polled often: an admin's change is
    # judged by within seconds (edge/threshold_sync.py).
    thresholds_poll_s: float = Field(default=3.0, ge=0.5, le=3600.0)

    @model_validator(mode="after")
    def _some_key(self) -> ModelsConfig:
        if self.public_key_file is None and not self.public_key_files:
            raise ValueError("public_key_file: set it or public_key_files (one key at least)")
        return self

    def key_files(self) -> list[Path]:
        """Every trusted public key file, the single-key setting first."""
        first = [self.public_key_file] if self.public_key_file is not None else []
        return first + [p for p in self.public_key_files if p not in first]


# Limits a threshold may take (the cloud refuses the same: cloud/thresholds.py validate).
MAX_THRESHOLD_ABS = 1e12


def threshold_problem(
    critical_low: float | None,
    critical_high: float | None,
    warn_low: float | None,
    warn_high: float | None,
    *,
    warn_order: bool = True,
) -> tuple[str, str] | None:
    """(field, why) when the four limits do not make a threshold, else None. The same rules
    as the cloud's, so a pin and a cloud table mean the same thing. ``warn_order=False`` for
    the cloud's resolved tables: it serves warning bands derived by the catalog rule, which
    cross for a narrow band of negative limits (harmless: the critical band still judges)."""
    named = {
        "critical_low": critical_low,
        "critical_high": critical_high,
        "warn_low": warn_low,
        "warn_high": warn_high,
    }
    for field, value in named.items():
        # bool is an int in Python; a limit is never true/false.
        if value is not None and (type(value) not in (int, float) or not math.isfinite(value)):
            return field, "must be a finite number or null"
        if value is not None and abs(value) > MAX_THRESHOLD_ABS:
            return field, "is out of range (|value| > 1e12)"
    if critical_low is None and critical_high is None:
        return "critical_high", "give at least one of critical_low and critical_high"
    if critical_low is not None and critical_high is not None and critical_low >= critical_high:
        return "critical_high", "must be greater than critical_low"
    if warn_low is not None and critical_low is not None and warn_low < critical_low:
        return "warn_low", "must not be below critical_low"
    if warn_high is not None and critical_high is not None and warn_high > critical_high:
        return "warn_high", "must not be above critical_high"
    if warn_order and warn_low is not None and warn_high is not None and warn_low >= warn_high:
        return "warn_high", "must be greater than warn_low"
    return None


class ThresholdPin(StrictModel):
    """A local threshold for one sensor of one machine; it wins over the cloud's."""

    critical_low: float | None = Field(default=None, allow_inf_nan=False)
    critical_high: float | None = Field(default=None, allow_inf_nan=False)
    warn_low: float | None = Field(default=None, allow_inf_nan=False, description="null: rule")
    warn_high: float | None = Field(default=None, allow_inf_nan=False, description="null: rule")

    @model_validator(mode="after")
    def _consistent(self) -> ThresholdPin:
        problem = threshold_problem(
            self.critical_low, self.critical_high, self.warn_low, self.warn_high
        )
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        return self

    def thresholds(self) -> Thresholds:
        return Thresholds(self.critical_low, self.critical_high, self.warn_low, self.warn_high)


class EdgeConfig(StrictModel):
    edge_id: str
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    # ``sources:`` is the section's old name, still read (with a warning at load).
    inputs: SerializeAsAny[InputsConfig] = Field(validation_alias=AliasChoices("inputs", "sources"))
    output: OutputConfig
    forwarding: ForwardingConfig = Field(default_factory=ForwardingConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    time_window: TimeWindowConfig = Field(default_factory=TimeWindowConfig)
    models: ModelsConfig | None = None
    # Local pins, machine -> core sensor -> limits: they win over the cloud's thresholds.
    thresholds: dict[str, dict[str, ThresholdPin]] = Field(default_factory=dict)
    # What the file says in a deprecated way (logged by ``load_edge_config``).
    _deprecations: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _old_names(cls, data: Any, handler: Any) -> EdgeConfig:
        notes = []
        if isinstance(data, dict) and "sources" in data:
            if "inputs" in data:
                raise ValueError(
                    "both inputs: and sources: are set; sources: is the old name of "
                    "inputs: - keep one section"
                )
            notes.append("'sources:' is the old name of 'inputs:'; rename the section")
        config: EdgeConfig = handler(data)
        config._deprecations = notes
        return config

    @property
    def deprecations(self) -> list[str]:
        return list(self._deprecations)

    def input_warnings(self) -> list[str]:
        """What an input's config says that is valid but probably not meant (an input model
        may offer ``warnings()``, such as Modbus offsets that look like 4xxxx numbering),
        each prefixed with where it is set (``inputs.modbus[0].devices[0]...``)."""
        found = []
        for kind, entries in self.inputs.by_kind().items():
            for i, entry in enumerate(entries):
                warnings = getattr(entry, "warnings", None)
                if callable(warnings):
                    found += [f"inputs.{kind}[{i}].{w}" for w in warnings()]
        return found

    def secrets(self) -> dict[str, SecretRef]:
        """Every secret the config names, by where it is set (``output``,
        ``inputs.mqtt[0]``), for checking them all before the daemon needs them."""
        found: dict[str, SecretRef] = {}
        sections: list[tuple[str, object]] = [("output", self.output), ("models", self.models)]
        for kind, entries in self.inputs.by_kind().items():
            sections += [(f"inputs.{kind}[{i}]", entry) for i, entry in enumerate(entries)]
        for where, section in sections:
            if section is None:
                continue
            for attr in ("api_key_ref", "sasl_password_ref", "password_ref"):
                ref = getattr(section, attr, None)
                if isinstance(ref, SecretRef):
                    found[where] = ref
        return found

    def secret_problems(self) -> list[str]:
        """Secrets that cannot be read now (missing file, unreadable file, unset variable),
        each naming the section and setting."""
        return [
            f"{where}.{problem}"
            for where, ref in self.secrets().items()
            if (problem := ref.problem()) is not None
        ]

    @field_validator("inputs", mode="before")
    @classmethod
    def _inputs_by_kind(cls, value: Any) -> Any:
        if isinstance(value, InputsConfig):
            return value
        # Validated here, with the model of the input types registered now: the errors keep
        # their location (inputs.modbus[0].port).
        return inputs_model().model_validate(value)

    @field_validator("thresholds")
    @classmethod
    def _pin_names(
        cls, value: dict[str, dict[str, ThresholdPin]]
    ) -> dict[str, dict[str, ThresholdPin]]:
        for machine, sensors in value.items():
            if not MACHINE_ID_RE.fullmatch(machine):
                raise ValueError(f"thresholds.{machine[:40]!r}: not a machine id")
            for sensor in sensors:
                # The edge judges core sensors only (custom ones have no limits here).
                if sensor not in SENSORS_BY_NAME:
                    raise ValueError(f"thresholds.{machine}.{sensor[:64]}: not a core sensor name")
        return value

    def threshold_pins(self) -> dict[str, dict[str, Thresholds]]:
        return {
            machine: {sensor: pin.thresholds() for sensor, pin in sensors.items()}
            for machine, sensors in self.thresholds.items()
        }

    @field_validator("edge_id")
    @classmethod
    def _edge_id(cls, value: str) -> str:
        if not EDGE_ID_RE.fullmatch(value):
            raise ValueError(
                "1-64 letters, digits, '_', '.', ':', '-' starting with a letter/digit"
            )
        return value

    @model_validator(mode="after")
    def _has_inputs_and_unique_machines(self) -> EdgeConfig:
        if not self.inputs.all():
            kinds = ", ".join(f"inputs.{kind}" for kind in registry.input_types())
            raise ValueError(f"inputs: configure at least one input ({kinds})")
        seen: dict[str, str] = {}
        for machine, name in self.inputs.machines():
            if machine in seen:
                raise ValueError(
                    f"machine {machine!r} is read by both inputs {seen[machine]!r} and "
                    f"{name!r}; one machine, one input"
                )
            seen[machine] = name
        for machine in self.thresholds:
            if machine not in seen:
                raise ValueError(
                    f"thresholds.{machine}: machine {machine!r} is read by no input; "
                    f"pins apply to the machines in inputs ({sorted(seen)})"
                )
        names = [entry.name for entry in self.inputs.all()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"inputs: names must be unique; {duplicates} used twice")
        return self


def load_edge_config(
    path: Path, *, log_deprecations: bool = True, check_secrets: bool = False
) -> EdgeConfig:
    """The file at ``path`` validated (``ConfigError`` naming file and field otherwise);
    what it says in a deprecated way is logged as a warning, or left to the caller to show
    (``config.deprecations``). With ``check_secrets`` every secret file must exist and be
    readable and every secret variable be set (``check-config`` on the host that runs it)."""
    config = load_yaml_model(path, EdgeConfig)
    if check_secrets and (problems := config.secret_problems()):
        lines = "\n".join(f"  {p}" for p in problems)
        raise ConfigError(f"{path}: {len(problems)} secret(s) cannot be read\n{lines}")
    if log_deprecations:
        for note in config.deprecations:
            log_event(log, logging.WARNING, f"deprecated config: {note}", file=str(path))
        for warning in config.input_warnings():
            log_event(log, logging.WARNING, f"config: {warning}", file=str(path))
    return config
