"""Liveness (/healthz: the process answers) and readiness (/readyz: the database answers)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import Services
from cloud.api.errors import RETRY_AFTER_S
from cloud.api.schemas import HealthOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={
        503: {
            "model": ReadyOut,
            "description": "The database does not answer; retry after Retry-After",
        }
    },
)
async def readyz(services: Services) -> JSONResponse:
    def probe() -> bool:
        try:
            with services.pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:
            return False

    ok = await run_in_threadpool(probe)
    body = ReadyOut(
        status="ready" if ok else "not ready", database=ok, kafka=services.producer is not None
    )
    return JSONResponse(
        body.model_dump(),
        status_code=200 if ok else 503,
        headers=None if ok else {"Retry-After": str(RETRY_AFTER_S)},
    )
