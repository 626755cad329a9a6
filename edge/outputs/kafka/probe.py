"""``check-config --probe`` for the Kafka output: a metadata request to ``bootstrap_servers``
with the daemon's own client settings (``producer_settings``: TLS, SASL, client id), and the
configured topic looked up in the answer.

The metadata asked for is the whole cluster's, not the topic's: a producer's request for one
missing topic may create it on a broker with ``auto.create.topics.enable`` (librdkafka's
producer default), and a probe must change nothing.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException, Producer

from edge.inputs.base import ProbeResult
from edge.outputs.kafka.config import KafkaOutputConfig

INPUT = "output kafka"

# librdkafka reports connection and authentication failures to its logger and error_cb;
# the probe gathers them for its line instead of letting them reach the terminal.
_quiet = logging.getLogger("edge.outputs.kafka.probe.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def probe_kafka(config: KafkaOutputConfig, timeout_s: float = 10.0) -> list[ProbeResult]:
    """Two lines: did a broker answer (with the configured security), is the topic there."""
    servers = config.bootstrap_servers
    errors: list[str] = []

    def on_error(error: KafkaError) -> None:
        errors.append(error.str())

    try:
        settings = config.producer_settings()
    except ValueError as exc:  # the SASL password's file or variable cannot be read
        return [ProbeResult(INPUT, servers, False, str(exc))]
    producer = Producer({**settings, "error_cb": on_error, "logger": _quiet})
    try:
        metadata = producer.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        producer.poll(0)  # serves error_cb: what the client saw (refused, TLS, SASL)
        seen = f"; {errors[-1]}" if errors else ""
        detail = (
            f"no broker answered a metadata request within {timeout_s:g} s "
            f"(security_protocol {config.security_protocol}): {exc.args[0].str()}{seen}"
        )
        return [ProbeResult(INPUT, servers, False, detail)]
    finally:
        producer.flush(0)
    brokers = len(metadata.brokers)
    results = [
        ProbeResult(
            INPUT,
            servers,
            True,
            f"metadata from {brokers} broker{'s' if brokers != 1 else ''} "
            f"(security_protocol {config.security_protocol})",
        )
    ]
    topic = metadata.topics.get(config.topic)
    target = f"topic {config.topic}"
    if topic is None:
        detail = "not on the cluster: create it, or fix output.topic"
        results.append(ProbeResult(INPUT, target, False, detail))
    elif topic.error is not None:
        results.append(ProbeResult(INPUT, target, False, f"unusable: {topic.error.str()}"))
    else:
        partitions = len(topic.partitions)
        results.append(
            ProbeResult(
                INPUT, target, True, f"{partitions} partition{'s' if partitions != 1 else ''}"
            )
        )
    return results
