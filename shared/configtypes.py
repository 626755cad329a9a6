"""The configuration vocabulary shared by the edge's YAML models, the simulator's scenarios and
the cloud's environment settings, so every config names the same mistakes the same way:

- ``StrictModel``: the base of every config model; a key it does not know is an error that
  names the key (a misspelt setting never silently falls back to its default).
- ``SecretRef``: where a secret lives, an environment variable's name or a file's path,
  never the value itself; ``check()`` says whether it can be read, ``read()`` reads it.
- Defaults that several components must agree on (the Kafka topic), defined once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from shared.catalog import SENSOR_INDEX
from shared.message import CUSTOM_NAME_RE, MACHINE_ID_RE


def _machine_id(value: str) -> str:
    if not MACHINE_ID_RE.fullmatch(value):
        raise ValueError("1-32 letters, digits, '_', '.', '-' starting with a letter or digit")
    return value


def _sensor_name(value: str) -> str:
    if value not in SENSOR_INDEX and not CUSTOM_NAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is neither a core sensor nor a snake_case custom name")
    return value


def _core_sensor(value: str) -> str:
    if value not in SENSOR_INDEX:
        raise ValueError(f"{value!r} is not a core sensor")
    return value


MachineId = Annotated[str, AfterValidator(_machine_id)]
SensorName = Annotated[str, AfterValidator(_sensor_name)]
CoreSensorName = Annotated[str, AfterValidator(_core_sensor)]


# The Kafka topic of readings (edge Kafka output -> cloud aggregator, and the cloud's ingest
# producer), its dead-letter topic and the aggregator's consumer group. Everything that needs a
# default names these; deployments override them (KAFKA_TOPIC, ``output.topic``).
KAFKA_TOPIC = "sensor-data"
KAFKA_DEAD_LETTER_TOPIC = f"{KAFKA_TOPIC}-dlq"
KAFKA_CONSUMER_GROUP = "sensor-consumer-group"

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are refused, by name (pydantic reports
    ``<key>: Extra inputs are not permitted``)."""

    model_config = ConfigDict(extra="forbid")


class SecretRef(StrictModel):
    """Where a secret is: the name of an environment variable or the path of a file (systemd
    credentials, Docker/K8s secrets). The value itself is never written in a config file.

    ``env_label``/``file_label`` are the names a person wrote (``api_key_env``,
    ``DATABASE_URL_FILE``), so every error names the setting to fix. When both sources are
    given the file wins, as with the ``NAME``/``NAME_FILE`` convention of container images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = Field(default=None, pattern=ENV_NAME_RE.pattern)
    file: Path | None = None
    env_label: str = Field(default="env", exclude=True, repr=False)
    file_label: str = Field(default="file", exclude=True, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _never_inline(cls, data: Any) -> Any:
        if not isinstance(data, dict | SecretRef):
            raise ValueError(
                "a secret is never written inline: name an environment variable (env) or a "
                "file (file) that holds it"
            )
        return data

    @model_validator(mode="after")
    def _has_a_source(self) -> SecretRef:
        if self.env is None and self.file is None:
            raise ValueError(f"set {self.env_label} or {self.file_label}")
        return self

    @classmethod
    def of(cls, model: BaseModel, prefix: str) -> SecretRef | None:
        """The reference spelt as the flat fields ``<prefix>_env``/``<prefix>_file`` of a
        config model (the edge's YAML), or None when neither is set."""
        env = getattr(model, f"{prefix}_env")
        file = getattr(model, f"{prefix}_file")
        if env is None and file is None:
            return None
        return cls(env=env, file=file, env_label=f"{prefix}_env", file_label=f"{prefix}_file")

    @classmethod
    def from_environ(cls, name: str, environ: dict[str, str] | None = None) -> SecretRef | None:
        """The ``NAME`` / ``NAME_FILE`` convention: the variable itself or a file named by
        ``NAME_FILE``; None when neither is set (empty counts as unset)."""
        env = os.environ if environ is None else environ
        file = env.get(f"{name}_FILE") or None
        if file is None and not env.get(name):
            return None
        return cls(
            env=name,
            file=Path(file) if file else None,
            env_label=name,
            file_label=f"{name}_FILE",
        )

    def problem(self, environ: dict[str, str] | None = None) -> str | None:
        """Why the secret cannot be read now (naming the setting), or None when it can."""
        env = os.environ if environ is None else environ
        if self.file is not None:
            where = f"{self.file_label}={self.file}"
            if not self.file.exists():
                return f"{where}: no such file"
            if not self.file.is_file():
                return f"{where}: not a regular file"
            if not os.access(self.file, os.R_OK):
                return f"{where}: not readable by this user"
            return None
        if not env.get(self.env or ""):
            return f"{self.env_label}={self.env}: environment variable {self.env} is not set"
        return None

    def check(self, environ: dict[str, str] | None = None) -> None:
        """Raises ValueError naming the setting when the secret cannot be read."""
        problem = self.problem(environ)
        if problem is not None:
            raise ValueError(problem)

    def read(self, environ: dict[str, str] | None = None) -> str:
        """The secret (a file's content without surrounding whitespace). ValueError naming
        the setting when it is missing, unreadable or empty."""
        env = os.environ if environ is None else environ
        if self.file is not None:
            where = f"{self.file_label}={self.file}"
            try:
                value = self.file.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                raise ValueError(f"{where}: no such file") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"{where}: cannot read ({exc})") from None
            if not value:
                raise ValueError(f"{where}: file is empty")
            return value
        from_env = env.get(self.env or "")
        if not from_env:
            raise ValueError(
                f"{self.env_label}={self.env}: environment variable {self.env} is not set"
            )
        return from_env
