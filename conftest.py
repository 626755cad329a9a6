"""Real services for the test suite: one embedded PostgreSQL and one Kafka broker per
session, a fresh database and fresh topic names per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from cloud.db.embedded import EmbeddedPostgres
from cloud.db.migrate import apply_migrations

if TYPE_CHECKING:
    from tools.kafka_broker import KafkaBroker


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    server.start()
    yield server
    server.stop("immediate")


@pytest.fixture
def database_url(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = f"postgresql://postgres@127.0.0.1:{pg_server.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:{pg_server.port}/{name}"
    apply_migrations(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def module_database_url(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh, migrated database shared by one test module: for tests that only read, or
    only try what the API must refuse, so they need not pay for a database and a logged-in
    app each."""
    yield from database_url.__wrapped__(pg_server)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    from tools.kafka_broker import KafkaBroker

    broker = KafkaBroker(
        tmp_path_factory.mktemp("kafka") / "data",
        log_file=tmp_path_factory.getbasetemp() / "kafka.log",
    )
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def kafka_topic(kafka_broker: KafkaBroker) -> str:
    """A fresh 3-partition topic (the production layout) for one test."""
    name = f"sensor-data-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(name, partitions=3)
    return name


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real Mosquitto broker on a free loopback port."""
    from tests.support.processes import Mosquitto

    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield "127.0.0.1", broker.port
    broker.stop()
