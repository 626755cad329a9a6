"""WebSocket /api/v1/stream: new readings, anomalies and threshold changes, pushed.

Events come from PostgreSQL NOTIFY (``cloud.live``), so a reading stored through any API
process or aggregator reaches dashboards connected to any other. A heartbeat every few
seconds lets the page tell a quiet machine from a dead connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from cloud.accounts import User
from cloud.api.deps import get_services
from cloud.api.guards import websocket_user
from shared.message import MACHINE_ID_RE

router = APIRouter(tags=["stream"])

HEARTBEAT_S = 2.0
# How often an open stream re-checks its session and machine scope (the credential cache
# answers within CACHE_SECONDS, so a revocation ends the stream within about twice this).
RECHECK_S = 2.0
# WebSocket close codes (RFC 6455 private range): the page shows the reason and stops
# retrying for these instead of reconnecting forever.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_BAD_REQUEST = 4400


@router.websocket("/api/v1/stream")
async def stream(
    websocket: WebSocket,
    machines: Annotated[
        str | None, Query(max_length=4000, description="comma-separated machine ids")
    ] = None,
) -> None:
    """Any logged-in user (session cookie or Bearer token); only their machines' events."""
    user = await websocket_user(websocket)
    # Accepted before any refusal: a close code reaches the page only on an open socket
    # (a refused handshake is a bare HTTP 403 that browsers do not expose).
    await websocket.accept()
    if user is None:
        await websocket.close(code=CLOSE_UNAUTHENTICATED, reason="log in first")
        return
    wanted: frozenset[str] | None = None
    if machines:
        ids = [m.strip() for m in machines.split(",") if m.strip()]
        bad = [m for m in ids if not MACHINE_ID_RE.match(m)]
        if bad:
            await websocket.close(code=CLOSE_BAD_REQUEST, reason=f"bad machine id {bad[0]!r}")
            return
        refused = [m for m in ids if not user.may_see(m)]
        if refused:
            await websocket.close(code=CLOSE_FORBIDDEN, reason=f"not assigned {refused[0]!r}")
            return
        wanted = frozenset(ids)
    elif user.machines is not None:
        wanted = frozenset(user.machines)

    hub = get_services(websocket).live
    if hub is None:
        await websocket.close(code=1011, reason="live stream not running")
        return
    subscription = hub.subscribe(wanted)
    try:
        await websocket.send_text(
            orjson.dumps(
                {
                    "type": "hello",
                    "user": user.as_json(),
                    "machines": sorted(wanted) if wanted is not None else None,
                    "heartbeat_s": HEARTBEAT_S,
                    "live": hub.connected.is_set(),
                }
            ).decode()
        )
        receiver = asyncio.create_task(_drain_client(websocket))
        checked = time.monotonic()
        try:
            while not receiver.done():
                if time.monotonic() - checked >= RECHECK_S:
                    # The session and the scope, again: a logout, an expiry, a disabled
                    # account or a machine taken away ends the stream within seconds.
                    checked = time.monotonic()
                    refusal = _still_allowed(await websocket_user(websocket), wanted)
                    if refusal is not None:
                        await websocket.close(code=refusal[0], reason=refusal[1])
                        return
                try:
                    event = await asyncio.wait_for(subscription.queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    event = {
                        "type": "heartbeat",
                        "live": hub.connected.is_set(),
                        "dropped": subscription.dropped,
                    }
                await websocket.send_text(orjson.dumps(event).decode())
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await receiver
    except (WebSocketDisconnect, RuntimeError):
        # The browser went away mid-send; nothing to clean up beyond the subscription.
        pass
    finally:
        hub.unsubscribe(subscription)


def _still_allowed(user: User | None, wanted: frozenset[str] | None) -> tuple[int, str] | None:
    """(close code, reason) when the stream's user may no longer see what it streams."""
    if user is None:
        return CLOSE_UNAUTHENTICATED, "session ended: log in again"
    if user.machines is not None and (wanted is None or any(not user.may_see(m) for m in wanted)):
        return CLOSE_FORBIDDEN, "machine access changed"
    return None


async def _drain_client(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, so a close from its side is noticed."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
