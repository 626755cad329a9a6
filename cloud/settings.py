"""Cloud settings, from the environment (12-factor). Secrets come from the environment or a
file named by ``*_FILE``; nothing secret has a default in code."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from shared.message import TimeWindow


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the variable."""


def secret(name: str) -> str | None:
    """``NAME`` or the contents of the file named by ``NAME_FILE`` (Docker/K8s secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{name}_FILE={path}: cannot read ({exc})") from None
        if not value:
            raise SettingsError(f"{name}_FILE={path}: file is empty")
        return value
    value = os.environ.get(name)
    return value or None


def _int(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected an integer") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value}: expected {low}..{high}")
    return value


@dataclass(frozen=True)
class CloudSettings:
    database_url: str | None = None
    kafka_bootstrap: str | None = None
    topic: str = "sensor-data"
    consumer_group: str = "sensor-consumer-group"
    dead_letter_topic: str = "sensor-data-dlq"
    ingest_api_key: str | None = None
    max_body_bytes: int = 1_048_576
    max_batch_readings: int = 5000
    pool_min: int = 2
    pool_max: int = 10
    partition_ahead_days: int = 3
    retention_days: int = 0  # 0: keep every partition
    # The acceptance window for reading timestamps (API and aggregator): a backfill may
    # reach 400 days back (an edge offline for a year still delivers its buffer), a sender's
    # clock may run 10 minutes fast. Anything outside is refused / dead-lettered.
    accept_max_age_days: int = 400
    accept_max_ahead_s: int = 600
    # Ingest in Kafka mode: how long one request waits for the broker's confirmation before
    # answering 503, and how many messages may wait for confirmation across all requests
    # before new ones are refused at once (a Kafka outage must not pile up memory).
    ingest_delivery_timeout_ms: int = 2000
    ingest_max_in_flight: int = 50_000
    kafka_extra: dict[str, str] = field(default_factory=dict)

    @property
    def window(self) -> TimeWindow:
        return TimeWindow(
            max_age=timedelta(days=self.accept_max_age_days),
            max_ahead=timedelta(seconds=self.accept_max_ahead_s),
        )

    @classmethod
    def from_env(cls) -> CloudSettings:
        extra: dict[str, str] = {}
        protocol = os.environ.get("KAFKA_SECURITY_PROTOCOL")
        if protocol:
            extra["security.protocol"] = protocol
        if os.environ.get("KAFKA_SASL_USERNAME"):
            extra["sasl.mechanism"] = os.environ.get("KAFKA_SASL_MECHANISM", "PLAIN")
            extra["sasl.username"] = os.environ["KAFKA_SASL_USERNAME"]
            extra["sasl.password"] = secret("KAFKA_SASL_PASSWORD") or ""
        return cls(
            database_url=secret("DATABASE_URL"),
            kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
            or os.environ.get("KAFKA_BROKER_URL")
            or None,
            topic=os.environ.get("KAFKA_TOPIC", "sensor-data"),
            consumer_group=os.environ.get("KAFKA_CONSUMER_GROUP", "sensor-consumer-group"),
            dead_letter_topic=os.environ.get("KAFKA_DEAD_LETTER_TOPIC", "sensor-data-dlq"),
            ingest_api_key=secret("RIG_INGEST_API_KEY"),
            max_body_bytes=_int("RIG_MAX_BODY_BYTES", 1_048_576, 1024, 64 * 1_048_576),
            max_batch_readings=_int("RIG_MAX_BATCH_READINGS", 5000, 1, 100_000),
            pool_min=_int("RIG_DB_POOL_MIN", 2, 1, 100),
            pool_max=_int("RIG_DB_POOL_MAX", 10, 1, 500),
            partition_ahead_days=_int("RIG_PARTITION_AHEAD_DAYS", 3, 1, 366),
            retention_days=_int("RIG_RETENTION_DAYS", 0, 0, 36_500),
            accept_max_age_days=_int("RIG_ACCEPT_MAX_AGE_DAYS", 400, 1, 36_500),
            accept_max_ahead_s=_int("RIG_ACCEPT_MAX_AHEAD_S", 600, 0, 86_400),
            ingest_delivery_timeout_ms=_int("RIG_INGEST_DELIVERY_TIMEOUT_MS", 2000, 100, 60_000),
            ingest_max_in_flight=_int("RIG_INGEST_MAX_IN_FLIGHT", 50_000, 100, 1_000_000),
            kafka_extra=extra,
        )
