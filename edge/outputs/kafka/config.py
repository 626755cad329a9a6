"""Typed configuration of the Kafka output."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from shared.configtypes import ENV_NAME_RE, KAFKA_TOPIC, SecretRef, StrictModel


class KafkaOutputConfig(StrictModel):
    kind: Literal["kafka"]
    bootstrap_servers: str = Field(min_length=1, description="host:port[,host:port...]")
    topic: str = Field(default=KAFKA_TOPIC, pattern=r"^[A-Za-z0-9._-]{1,249}$")
    client_id: str = "rig-edge"
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    linger_ms: int = Field(default=10, ge=0, le=60_000)
    # How many buffered readings one forwarding round takes; librdkafka batches them further.
    batch_readings: int = Field(default=5000, ge=1, le=100_000)
    message_timeout_ms: int = Field(default=30_000, ge=1000, le=3_600_000)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    # Secrets never live in the YAML: name an environment variable or a file.
    sasl_password_env: str | None = Field(default=None, pattern=ENV_NAME_RE.pattern)
    sasl_password_file: Path | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaOutputConfig:
        if self.security_protocol.startswith("SASL"):
            if not self.sasl_mechanism or not self.sasl_username:
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs sasl_mechanism and "
                    "sasl_username"
                )
            if self.sasl_password_ref is None:
                raise ValueError("SASL needs sasl_password_env or sasl_password_file")
        return self

    @property
    def sasl_password_ref(self) -> SecretRef | None:
        return SecretRef.of(self, "sasl_password")

    def sasl_password(self) -> str | None:
        ref = self.sasl_password_ref
        return None if ref is None else ref.read()

    def producer_settings(self) -> dict[str, object]:
        settings: dict[str, object] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            # Exactly-once into the log per producer session, ordered per partition even
            # across retries; the cloud's (edge_id, seq) key covers resends across restarts.
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": self.compression,
            "linger.ms": self.linger_ms,
            "message.timeout.ms": self.message_timeout_ms,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 200_000,
            # Same key -> same partition as Java clients, so a machine's readings stay in one
            # partition whichever client produced them.
            "partitioner": "murmur2_random",
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            settings["sasl.mechanism"] = self.sasl_mechanism
            settings["sasl.username"] = self.sasl_username or ""
            settings["sasl.password"] = self.sasl_password() or ""
        for key, value in (
            ("ssl.ca.location", self.ssl_ca_location),
            ("ssl.certificate.location", self.ssl_certificate_location),
            ("ssl.key.location", self.ssl_key_location),
        ):
            if value is not None:
                settings[key] = str(value)
        return settings
