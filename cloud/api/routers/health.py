"""Liveness (/healthz: the process answers) and readiness (/readyz: the database answers)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import Services

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: Services) -> JSONResponse:
    def probe() -> bool:
        try:
            with services.pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:
            return False

    ok = await run_in_threadpool(probe)
    return JSONResponse(
        {
            "status": "ready" if ok else "not ready",
            "database": ok,
            "kafka": services.producer is not None,
        },
        status_code=200 if ok else 503,
        headers=None if ok else {"Retry-After": "5"},
    )
