"""Typed configuration of the HTTPS output to the cloud ingest API."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from shared.configtypes import ENV_NAME_RE, SecretRef, StrictModel


class ApiKeySource(StrictModel):
    """This edge's API key for the cloud (``rig-cloud edge-key create``), named by
    ``api_key_env`` or ``api_key_file``, never written in the YAML. Shared by the HTTP output
    and the model sync (``models:``), which authenticate as the same edge."""

    api_key_env: str | None = Field(default=None, pattern=ENV_NAME_RE.pattern)
    api_key_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "api_key" in data:
            raise ValueError(
                "api_key: the key is never written in YAML; set api_key_env or api_key_file"
            )
        return data

    @model_validator(mode="after")
    def _key_source(self) -> Any:
        if self.api_key_ref is None:
            raise ValueError("set api_key_env or api_key_file (the key is never written in YAML)")
        return self

    @property
    def api_key_ref(self) -> SecretRef | None:
        return SecretRef.of(self, "api_key")

    def api_key(self) -> str:
        """The key; ValueError naming ``api_key_env``/``api_key_file`` when unavailable."""
        ref = self.api_key_ref
        assert ref is not None  # _key_source
        return ref.read()


class HttpOutputConfig(ApiKeySource):
    kind: Literal["http"]
    url: str = Field(pattern=r"^https?://", description="The cloud's /api/v1/ingest URL")
    batch_readings: int = Field(default=1000, ge=1, le=5000)
    timeout_s: float = Field(default=10.0, gt=0.0, le=300.0)
    ca_file: Path | None = None
    verify_tls: bool = True
