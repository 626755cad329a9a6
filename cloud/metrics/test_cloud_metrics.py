"""The aggregator's and the trainer's /metrics, as the processes serve them: Prometheus text
with lag, batch timings, what became of the messages, build info and process metrics
(aggregator: the real `rig-cloud aggregate` against real Kafka and PostgreSQL)."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from cloud.metrics import serve_metrics
from cloud.metrics.trainer import record_job
from shared.message import Reading, encode_reading
from tests.support.processes import Service, free_port, wait_until
from tools.kafka_broker import KafkaBroker


def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(v for _labels, v in samples.get(name, []))


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_aggregator_metrics(
    database_url: str, kafka_broker: KafkaBroker, kafka_topic: str, log_dir: Path
) -> None:
    now = datetime.now(UTC)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for i in range(20):
        producer.produce(
            kafka_topic, encode_reading(Reading("A", "e1", i, now, {"rpm": 1.0})), b"A"
        )
    producer.produce(kafka_topic, b"not a reading", b"A")
    producer.flush(10)
    port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "KAFKA_TOPIC": kafka_topic,
        "KAFKA_CONSUMER_GROUP": f"g-{kafka_topic}",
        "KAFKA_DEAD_LETTER_TOPIC": f"{kafka_topic}-dlq",
    }
    agg = Service(
        "aggregator", ["cloud.cli", "aggregate", "--metrics-port", str(port)], log_dir, env
    ).start()
    try:
        wait_until(
            lambda: (
                _value(_scrape(port), "rig_aggregator_readings_stored_total") >= 20
                and _value(_scrape(port), "rig_dead_letters_total") >= 1
                # The lag is measured every few seconds, after the first batches.
                and "rig_consumer_lag_messages" in _scrape(port)
            ),
            90,
            "20 stored, 1 dead letter and the lag in /metrics",
            services=[agg],
        )
        samples = _scrape(port)
    finally:
        agg.stop()
    assert _value(samples, "rig_aggregator_batch_seconds_count") >= 1
    assert _value(samples, "rig_aggregator_batch_messages_sum") >= 21
    assert "rig_consumer_lag_messages" in samples
    assert "rig_aggregator_batches_failed_total" in samples
    assert any(s["component"] == "aggregator" for s, _ in samples["rig_build_info"])
    assert "process_cpu_seconds_total" in samples


def test_trainer_metrics_exposition() -> None:
    port = free_port()
    assert serve_metrics("trainer", "127.0.0.1", port)
    record_job("accepted", 42.0)
    record_job("refused", 40.0)
    samples = _scrape(port)
    jobs = {s["result"]: v for s, v in samples["rig_trainer_jobs_total"]}
    assert jobs["accepted"] >= 1 and jobs["refused"] >= 1 and "crashed" in jobs
    assert _value(samples, "rig_trainer_job_seconds_count") >= 2
    assert _value(samples, "rig_trainer_last_job_timestamp_seconds") > 0
    assert any(s["component"] == "trainer" for s, _ in samples["rig_build_info"])
    # A port already taken is logged and the process goes on without metrics.
    assert not serve_metrics("trainer", "127.0.0.1", port)
