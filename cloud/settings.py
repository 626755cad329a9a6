"""Cloud settings, from the environment (12-factor), declared as one pydantic model.

Each field names its environment variable (``validation_alias``); ``CloudSettings.from_env()``
reads exactly those variables and validates them at the boundary, so a bad value fails at
start-up with the variable named (``RIG_DB_POOL_MAX=abc: ...``). Secret variables (marked
``secret``) also accept ``NAME_FILE``, the path of a file holding the value (Docker/K8s
secrets, systemd credentials); the file wins when both are set. Nothing secret has a default
in code. An empty variable counts as unset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo

from shared.configtypes import (
    KAFKA_CONSUMER_GROUP,
    KAFKA_DEAD_LETTER_TOPIC,
    KAFKA_TOPIC,
    SecretRef,
)
from shared.message import TimeWindow

# The prototype's provider (docs/manifest.md §2.1), used when only a key is configured.
GROQ_BASE_URL = "https://api.groq.com/openai/v1"


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the variable."""


_TOPIC = r"^[A-Za-z0-9._-]{1,249}$"
# Marks a field whose variable also accepts NAME_FILE and whose value is never echoed.
_SECRET: dict[str, Any] = {"secret": True}


# A bootstrap ingest key writes as any edge: it must be a real random secret. Shorter than
# this, or a placeholder left from an example, and the cloud refuses to start.
MIN_BOOTSTRAP_KEY_LENGTH = 32
_PLACEHOLDER_WORDS = ("changeme", "placeholder", "replaceme", "example", "yourkey", "secret")


def weak_bootstrap_key(key: str) -> str | None:
    """Why ``key`` may not be the bootstrap key, or None when it may."""
    if len(key.encode()) < MIN_BOOTSTRAP_KEY_LENGTH:
        return f"must be at least {MIN_BOOTSTRAP_KEY_LENGTH} bytes of random data"
    folded = "".join(c for c in key.lower() if c.isalnum())
    for word in _PLACEHOLDER_WORDS:
        if word in folded:
            return f"looks like a placeholder ({word!r}): generate one, e.g. openssl rand -hex 32"
    return None


def _secret(name: str) -> Any:
    return Field(
        default=None, min_length=1, validation_alias=name, repr=False, json_schema_extra=_SECRET
    )


class CloudSettings(BaseModel):
    """Every variable the cloud reads. Constructed by field name in code and tests
    (``CloudSettings(database_url=...)``), from the environment by ``from_env()``."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )

    # Unset: ``rig-cloud serve|aggregate|migrate|maintain`` start an embedded PostgreSQL
    # (demo and tests); everything else that needs the database refuses to start.
    database_url: str | None = _secret("DATABASE_URL")
    kafka_bootstrap: str | None = Field(
        default=None,
        min_length=1,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BROKER_URL"),
    )
    topic: str = Field(default=KAFKA_TOPIC, pattern=_TOPIC, validation_alias="KAFKA_TOPIC")
    consumer_group: str = Field(
        default=KAFKA_CONSUMER_GROUP, min_length=1, validation_alias="KAFKA_CONSUMER_GROUP"
    )
    dead_letter_topic: str = Field(
        default=KAFKA_DEAD_LETTER_TOPIC, pattern=_TOPIC, validation_alias="KAFKA_DEAD_LETTER_TOPIC"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = (
        Field(default=None, validation_alias="KAFKA_SECURITY_PROTOCOL")
    )
    kafka_sasl_mechanism: Literal[
        "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"
    ] = Field(default="PLAIN", validation_alias="KAFKA_SASL_MECHANISM")
    kafka_sasl_username: str | None = Field(default=None, validation_alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: str | None = _secret("KAFKA_SASL_PASSWORD")
    # Further librdkafka settings, merged last (code and tests; not read from the environment).
    kafka_extra: dict[str, str] = Field(default_factory=dict)
    # Optional bootstrap ingest key for any edge (per-edge keys live in the database).
    ingest_api_key: str | None = _secret("RIG_INGEST_API_KEY")

    @field_validator("ingest_api_key")
    @classmethod
    def _strong_bootstrap_key(cls, value: str | None) -> str | None:
        problem = None if value is None else weak_bootstrap_key(value)
        if problem:
            raise ValueError(problem)
        return value

    # First start only: creates ``admin`` when the database has no users.
    bootstrap_admin_password: str | None = _secret("RIG_BOOTSTRAP_ADMIN_PASSWORD")
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, le=64 * 1_048_576, validation_alias="RIG_MAX_BODY_BYTES"
    )
    # Every other route's body limit (login, users, thresholds ...): refused with 413 from the
    # Content-Length before a byte is read, and cut off when a streamed body grows past it.
    max_request_bytes: int = Field(
        default=65_536, ge=1024, le=64 * 1_048_576, validation_alias="RIG_MAX_REQUEST_BYTES"
    )
    # Proxies whose X-Forwarded-For/-Proto are believed (comma-separated IPs or networks, "*"
    # for any): the client address the login throttle counts and the scheme that makes the
    # session cookie Secure and adds HSTS come from them. Default: only a proxy on localhost.
    forwarded_allow_ips: str = Field(
        default="127.0.0.1", min_length=1, validation_alias="RIG_FORWARDED_ALLOW_IPS"
    )
    # Sessions end after this long unused, besides their absolute lifetime (12 h).
    session_idle_minutes: int = Field(
        default=30, ge=1, le=24 * 60, validation_alias="RIG_SESSION_IDLE_MINUTES"
    )
    # Login throttle (cloud/api/throttle.py): failures allowed per client address and per
    # account within the window before 429 with Retry-After, doubling per further failure.
    login_max_failures_ip: int = Field(
        default=10, ge=1, le=10_000, validation_alias="RIG_LOGIN_MAX_FAILURES_IP"
    )
    login_max_failures_account: int = Field(
        default=5, ge=1, le=10_000, validation_alias="RIG_LOGIN_MAX_FAILURES_ACCOUNT"
    )
    # Concurrent argon2 verifications (64 MiB each) across the process; others wait.
    password_hash_concurrency: int = Field(
        default=2, ge=1, le=64, validation_alias="RIG_PASSWORD_HASH_CONCURRENCY"
    )
    max_batch_readings: int = Field(
        default=5000, ge=1, le=100_000, validation_alias="RIG_MAX_BATCH_READINGS"
    )
    pool_min: int = Field(default=2, ge=1, le=100, validation_alias="RIG_DB_POOL_MIN")
    pool_max: int = Field(default=10, ge=1, le=500, validation_alias="RIG_DB_POOL_MAX")
    partition_ahead_days: int = Field(
        default=3, ge=1, le=366, validation_alias="RIG_PARTITION_AHEAD_DAYS"
    )
    # 0: keep every partition.
    retention_days: int = Field(default=0, ge=0, le=36_500, validation_alias="RIG_RETENTION_DAYS")
    # The acceptance window for reading timestamps (API and aggregator): a backfill may
    # reach 400 days back (an edge offline for a year still delivers its buffer), a sender's
    # clock may run 10 minutes fast. Anything outside is refused / dead-lettered.
    accept_max_age_days: int = Field(
        default=400, ge=1, le=36_500, validation_alias="RIG_ACCEPT_MAX_AGE_DAYS"
    )
    accept_max_ahead_s: int = Field(
        default=600, ge=0, le=86_400, validation_alias="RIG_ACCEPT_MAX_AHEAD_S"
    )
    # Ingest in Kafka mode: how long one request waits for the broker's confirmation before
    # answering 503, and how many messages may wait for confirmation across all requests
    # before new ones are refused at once (a Kafka outage must not pile up memory).
    ingest_delivery_timeout_ms: int = Field(
        default=2000, ge=100, le=60_000, validation_alias="RIG_INGEST_DELIVERY_TIMEOUT_MS"
    )
    ingest_max_in_flight: int = Field(
        default=50_000, ge=100, le=1_000_000, validation_alias="RIG_INGEST_MAX_IN_FLIGHT"
    )

    # The AI assistant (cloud/assistant/, docs/manifest.md §2.1): any OpenAI-compatible
    # chat-completions endpoint (Groq, or a local llama.cpp / vLLM / Ollama server). A key
    # alone means Groq; a base URL alone means a local server that needs no key; neither:
    # every answer comes from the offline path (``ai_endpoint`` is None).
    ai_base_url: str | None = Field(
        default=None, pattern=r"^https?://[^\s/]+(/\S*)?$", validation_alias="RIG_AI_BASE_URL"
    )
    ai_api_key: str | None = Field(
        default=None,
        min_length=1,
        validation_alias=AliasChoices("RIG_AI_API_KEY", "GROQ_API_KEY"),
        repr=False,
        json_schema_extra=_SECRET,
    )
    ai_model_parsing: str = Field(
        default="llama3-8b-8192",
        min_length=1,
        max_length=200,
        validation_alias="RIG_AI_MODEL_PARSING",
    )
    ai_model_reports: str = Field(
        default="llama-3.3-70b-versatile",
        min_length=1,
        max_length=200,
        validation_alias="RIG_AI_MODEL_REPORTS",
    )
    # One HTTP attempt may take ai_timeout_s; all attempts of one request (retries on 429 and
    # 5xx, with back-off honouring Retry-After) together at most ai_budget_s, after which the
    # offline path answers.
    ai_timeout_s: float = Field(default=30.0, gt=0, le=600, validation_alias="RIG_AI_TIMEOUT_S")
    ai_max_retries: int = Field(default=2, ge=0, le=10, validation_alias="RIG_AI_MAX_RETRIES")
    ai_budget_s: float = Field(default=60.0, gt=0, le=1800, validation_alias="RIG_AI_BUDGET_S")
    ai_max_tokens: int = Field(default=1500, ge=64, le=32_768, validation_alias="RIG_AI_MAX_TOKENS")
    # Uploaded spec sheets: size limit, and how many PDF pages are read (the first ones).
    ai_max_upload_bytes: int = Field(
        default=10 * 1_048_576,
        ge=1024,
        le=100 * 1_048_576,
        validation_alias="RIG_AI_MAX_UPLOAD_BYTES",
    )
    ai_pdf_pages: int = Field(default=4, ge=1, le=50, validation_alias="RIG_AI_PDF_PAGES")

    @property
    def ai_endpoint(self) -> str | None:
        """The chat-completions base URL to use, or None: offline."""
        if self.ai_base_url:
            return self.ai_base_url.rstrip("/")
        return GROQ_BASE_URL if self.ai_api_key else None

    @property
    def window(self) -> TimeWindow:
        return TimeWindow(
            max_age=timedelta(days=self.accept_max_age_days),
            max_ahead=timedelta(seconds=self.accept_max_ahead_s),
        )

    @property
    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka settings for every client (security from the environment, then
        ``kafka_extra``)."""
        config: dict[str, str] = {}
        if self.kafka_security_protocol:
            config["security.protocol"] = self.kafka_security_protocol
        if self.kafka_sasl_username:
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username
            config["sasl.password"] = self.kafka_sasl_password or ""
        config.update(self.kafka_extra)
        return config

    def require_database_url(self) -> str:
        """The database URL, for what cannot run without one."""
        if not self.database_url:
            raise SettingsError("DATABASE_URL (or DATABASE_URL_FILE) is not set")
        return self.database_url

    def with_database(self, url: str | None = None) -> DatabaseSettings:
        """These settings for a command that needs the database: ``url`` (an embedded
        server's) or DATABASE_URL; SettingsError naming DATABASE_URL without either."""
        values = self.model_dump()
        values["database_url"] = url or self.require_database_url()
        return DatabaseSettings(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CloudSettings:
        """The settings from ``environ`` (default: the process environment); SettingsError
        naming the variable(s) at fault."""
        env = os.environ if environ is None else environ
        data: dict[str, str] = {}
        raw: dict[str, str] = {}
        for info in cls.model_fields.values():
            for var in _env_names(info):
                if _is_secret(info):
                    ref = SecretRef.from_environ(var, dict(env))
                    if ref is None:
                        continue
                    try:
                        data[var] = ref.read(dict(env))
                    except ValueError as exc:
                        raise SettingsError(str(exc)) from None
                    raw[var] = "(secret)"
                    break
                value = env.get(var)
                if value:
                    data[var] = raw[var] = value
                    break
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = []
            for err in exc.errors(include_url=False):
                var = str(err["loc"][0]) if err["loc"] else "(settings)"
                shown = raw.get(var)
                given = f"={shown!r}" if shown is not None and shown != "(secret)" else ""
                problems.append(f"{var}{given}: {err['msg']}")
            raise SettingsError("; ".join(problems)) from None


class DatabaseSettings(CloudSettings):
    """Settings of a command that uses the database: ``database_url`` is always set."""

    database_url: str = Field(
        min_length=1, validation_alias="DATABASE_URL", repr=False, json_schema_extra=_SECRET
    )


def _env_names(info: FieldInfo) -> list[str]:
    alias = info.validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return []


def _is_secret(info: FieldInfo) -> bool:
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("secret"))
