"""Field types and helpers shared by the typed config models (edge inputs and outputs,
simulator scenarios), so every config names the same mistakes the same way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

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


def read_secret(env: str | None, file: Path | None) -> str | None:
    """A secret from a file (preferred: systemd credentials, K8s secrets) or an environment
    variable; never from the YAML itself."""
    if file is not None:
        return file.read_text(encoding="utf-8").strip()
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ValueError(f"environment variable {env} is not set")
        return value
    return None
