"""Typed configuration of the rig simulator."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.message import MACHINE_ID_RE


class SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    machines: list[str] = Field(
        default_factory=lambda: ["A", "B", "C"], min_length=1, max_length=247
    )
    rate_hz: float = Field(default=1.0, gt=0.0, le=1000.0)
    seed: int = 42
    modbus_host: str = "127.0.0.1"
    modbus_port: int = Field(default=5020, ge=1, le=65535)
    record_path: Path | None = None

    @field_validator("machines")
    @classmethod
    def _machine_ids(cls, machines: list[str]) -> list[str]:
        for machine in machines:
            if not MACHINE_ID_RE.match(machine):
                raise ValueError(
                    f"{machine!r} is not a valid machine id (letters, digits, "
                    "'_', '.', '-'; at most 32)"
                )
        if len(set(machines)) != len(machines):
            raise ValueError("machine ids must be unique")
        return machines
