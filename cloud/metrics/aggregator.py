"""The aggregator's metrics (``rig-cloud aggregate``, metrics port 9471 by default).

- ``rig_consumer_lag_messages{topic,partition}`` (cloud/aggregator.py): what Kafka holds
  that is not stored yet; the lag alert and the autoscaler read it;
- ``rig_aggregator_batch_seconds`` and ``rig_aggregator_batch_messages``: time to decode,
  store and commit one batch, and its size;
- ``rig_aggregator_readings_stored_total``, ``..._duplicates_total``, ``..._conflicts_total``,
  ``rig_aggregator_batches_failed_total`` and ``rig_dead_letters_total{kind}``: what became of
  the messages (read from the running Aggregator's own counts at scrape time).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

BATCH_SECONDS = Histogram(
    "rig_aggregator_batch_seconds",
    "Time to decode, store and commit one batch of messages",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_MESSAGES = Histogram(
    "rig_aggregator_batch_messages",
    "Messages in one batch",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)

_COUNTS = (
    ("rig_aggregator_readings_stored", "Readings stored in PostgreSQL", "stored_total"),
    ("rig_aggregator_duplicates", "Redelivered readings dropped by key", "duplicates_total"),
    (
        "rig_aggregator_conflicts",
        "Readings refused: same key, different content",
        "conflicts_total",
    ),
    (
        "rig_aggregator_batches_failed",
        "Batches that failed and were retried (database down, ...)",
        "batches_failed",
    ),
)


class AggregatorCollector(Collector):
    """Counters read from a running Aggregator's attributes at scrape time."""

    def __init__(self, aggregator: Any) -> None:
        self.aggregator = aggregator

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, help_text, attribute in _COUNTS:
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], float(getattr(self.aggregator, attribute, 0)))
            yield family


def register_aggregator(aggregator: Any) -> AggregatorCollector:
    collector = AggregatorCollector(aggregator)
    REGISTRY.register(collector)
    return collector
