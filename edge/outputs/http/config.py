"""Typed configuration of the HTTPS output to the cloud ingest API."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class HttpOutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["http"]
    url: str = Field(pattern=r"^https?://", description="The cloud's /api/v1/ingest URL")
    # The per-edge API key: from an environment variable or a file, never in the YAML.
    api_key_env: str | None = None
    api_key_file: Path | None = None
    batch_readings: int = Field(default=1000, ge=1, le=5000)
    timeout_s: float = Field(default=10.0, gt=0.0, le=300.0)
    ca_file: Path | None = None
    verify_tls: bool = True

    @model_validator(mode="after")
    def _key_source(self) -> HttpOutputConfig:
        if not (self.api_key_env or self.api_key_file):
            raise ValueError("set api_key_env or api_key_file (the key is never written in YAML)")
        return self

    def api_key(self) -> str:
        if self.api_key_file is not None:
            return self.api_key_file.read_text(encoding="utf-8").strip()
        assert self.api_key_env is not None
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ValueError(f"environment variable {self.api_key_env} is not set")
        return value
