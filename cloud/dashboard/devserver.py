"""Run the cloud API with the dashboard mounted: ``python -m cloud.dashboard.devserver``.

Used by the dashboard's browser tests and benchmark. It is ``rig-cloud serve`` (migrations,
bootstrap admin from RIG_BOOTSTRAP_ADMIN_PASSWORD, same settings from the environment) plus
the dashboard router for as long as ``create_app`` does not include it itself.
"""

from __future__ import annotations

import argparse
import signal

from fastapi import FastAPI

from cloud.settings import CloudSettings


def has_dashboard(app: FastAPI) -> bool:
    return any(getattr(route, "path", None) == "/login" for route in app.routes)


def build_app(settings: CloudSettings) -> FastAPI:
    from cloud.api.app import create_app
    from cloud.dashboard.router import router

    app = create_app(settings)
    if not has_dashboard(app):
        app.include_router(router)
    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from cloud.cli import _bootstrap_admin
    from cloud.db.migrate import apply_migrations

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    settings = CloudSettings.from_env()
    apply_migrations(settings.database_url or "")
    _bootstrap_admin(settings)
    app = build_app(settings)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
