import logging

import pytest

from shared.kafka_log import RepeatFilter, kafka_client_logger


def _record(text: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("k", level, __file__, 1, "%s", (text,), None)


def test_repeats_within_the_window_are_held_back_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr("shared.kafka_log.time.monotonic", lambda: clock[0])
    repeat = RepeatFilter(window_s=60)
    line = (
        "FAIL [rdkafka#consumer-1]: Connect to 127.0.0.1:9092 failed (after {}ms in state CONNECT)"
    )
    assert repeat.filter(_record(line.format(0)))
    # Same message, other timings: held back.
    assert not any(repeat.filter(_record(line.format(n))) for n in (1, 2, 37))
    # Another message or another level passes.
    assert repeat.filter(_record("GETPID: Coordinator load in progress"))
    assert repeat.filter(_record(line.format(0), logging.WARNING))
    clock[0] += 61
    again = _record(line.format(5))
    assert repeat.filter(again)
    assert again.getMessage().endswith("(and 3 more like it in the last 60 s)")


def test_the_client_logger_is_a_child_with_one_filter() -> None:
    logger = kafka_client_logger("edge.outputs.kafka.output")
    assert logger.name == "edge.outputs.kafka.output.librdkafka"
    kafka_client_logger("edge.outputs.kafka.output")
    assert sum(isinstance(f, RepeatFilter) for f in logger.filters) == 1
