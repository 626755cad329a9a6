"""Failpoints: named places where a test can make a process die on purpose.

The crash windows of the delivery guarantee (between the edge's Kafka confirmation and its
SQLite delete, between the aggregator's database commit and its offset commit, ...) are a few
microseconds wide; a test that kills a process "at some point" hits them only by luck. A
failpoint makes the process stop at exactly that line instead.

Arm one with the environment variable ``RIG_FAILPOINTS``: a comma-separated list of
``name`` or ``name=N`` (fire on the N-th time the line is reached, default the first).
When it fires, the process logs the name and ends itself with SIGKILL, so no clean-up code
runs, just as with ``kill -9`` from outside. Unarmed, a failpoint costs one dict lookup.

Names in use (grep ``failpoint(`` for the exact lines):

- ``edge.buffer.after_commit``: readings committed to SQLite, sources not yet acknowledged.
- ``edge.forwarder.after_send``: destination confirmed, rows not yet deleted from the buffer.
- ``cloud.aggregator.after_db_commit``: rows committed to PostgreSQL, offsets not committed.
- ``cloud.ingest.after_produce``: the API got the broker's confirmation, no answer sent yet.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

ENV_VAR = "RIG_FAILPOINTS"


def _parse(spec: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        name, _, count = item.partition("=")
        try:
            armed[name.strip()] = max(1, int(count)) if count else 1
        except ValueError:
            raise ValueError(
                f"{ENV_VAR}: {item!r} is not NAME or NAME=N (N a whole number)"
            ) from None
    return armed


_armed: dict[str, int] = _parse(os.environ.get(ENV_VAR, ""))


def arm(spec: str) -> None:
    """Arm failpoints from a spec like the environment variable's (for in-process tests)."""
    _armed.clear()
    _armed.update(_parse(spec))


def failpoint(name: str) -> None:
    """Stop the process here with SIGKILL if ``name`` is armed and its count is reached."""
    if not _armed:
        return
    remaining = _armed.get(name)
    if remaining is None:
        return
    if remaining > 1:
        _armed[name] = remaining - 1
        return
    log.critical("failpoint %s reached: killing the process", name)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
