"""What every output (forwarder) provides to the forwarding loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edge.buffer import BufferedReading


@dataclass(slots=True)
class SendResult:
    """``confirmed``: the destination has the readings durably; delete them.
    ``rejected``: the destination refuses them for good (with why); never resend.
    Everything else in the batch stays buffered and is retried."""

    confirmed: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    error: str | None = None


class Output(Protocol):
    name: str
    # The longest one ``send`` can take; a forwarding round that works longer is hung.
    max_send_s: float

    def send(
        self, batch: Sequence[BufferedReading], backlog: int = 0, status: bytes | None = None
    ) -> SendResult:
        """``backlog``: readings still buffered on this edge, reported to the cloud with the
        batch (Kafka header / HTTP header ``edge_backlog``) so operators see each rig's
        store-and-forward depth without a separate channel. ``status``: the edge's status
        report (``shared.edge_status``) when one is due, sent with the batch the same way
        (Kafka header ``edge_status`` on its first message, HTTP header ``X-Edge-Status``)."""
        ...

    def send_status(self, status: bytes) -> str | None:
        """Send the status report alone (nothing buffered to carry it): None when the
        destination has it, else why not. Best effort: the next report replaces it."""
        ...

    def close(self) -> None: ...
