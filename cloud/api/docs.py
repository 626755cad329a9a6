"""The API's documentation pages, Swagger UI (``/docs``) and ReDoc (``/redoc``), served from
the package: no CDN, so they work on an air-gapped plant network.

FastAPI's defaults load Swagger UI's JavaScript and CSS from a CDN and ReDoc's bundle plus
Google Fonts from the internet. Here both come from the npm packages ``swagger-ui-dist`` and
``redoc`` pinned in cloud/dashboard/package-lock.json (``npm ci --prefix cloud/dashboard``,
the same step as three.js and uPlot; the cloud image runs it), served at
``/docs/static/<name>`` from an allow-list of files.

Both pages carry a Content-Security-Policy that keeps them on this origin: ReDoc's bundle
always renders a "powered by" logo from its vendor's CDN, which the policy stops before any
request leaves the browser. Swagger UI's one inline script is allowed by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.requests import Request
from starlette.responses import Response

from cloud.dashboard.router import NODE_MODULES

STATIC_PREFIX = "/docs/static"
# The only files of node_modules these pages load: /docs/static/<name>.
DOCS_FILES: dict[str, str] = {
    "swagger-ui-bundle.js": "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
    "favicon-32x32.png": "swagger-ui-dist/favicon-32x32.png",
    "redoc.standalone.js": "redoc/bundles/redoc.standalone.js",
}


_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def _csp(html: str) -> str:
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; "
        # Swagger UI and ReDoc (styled-components) write <style> elements at run time.
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
        "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    )


def _with_csp(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = _csp(bytes(page.body).decode())
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


def install_docs(app: FastAPI, title: str) -> None:
    """Adds /docs, /docs/oauth2-redirect, /redoc and /docs/static/* to an app created with
    ``docs_url=None, redoc_url=None``."""
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect = "/docs/oauth2-redirect"

    async def swagger_ui(request: Request) -> HTMLResponse:
        return _with_csp(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{title} — Swagger UI",
                swagger_js_url=f"{STATIC_PREFIX}/swagger-ui-bundle.js",
                swagger_css_url=f"{STATIC_PREFIX}/swagger-ui.css",
                swagger_favicon_url=f"{STATIC_PREFIX}/favicon-32x32.png",
                oauth2_redirect_url=oauth2_redirect,
            )
        )

    async def swagger_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        return _with_csp(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{title} — ReDoc",
                redoc_js_url=f"{STATIC_PREFIX}/redoc.standalone.js",
                redoc_favicon_url=f"{STATIC_PREFIX}/favicon-32x32.png",
                with_google_fonts=False,
            )
        )

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        relative = DOCS_FILES.get(name)
        if relative is None:
            return JSONResponse({"error": f"no such file: {name}"}, status_code=404)
        path = NODE_MODULES / relative
        if not path.is_file():
            return JSONResponse(
                {
                    "error": f"{relative} is not installed: run "
                    "npm ci --prefix cloud/dashboard (the cloud image does)"
                },
                status_code=503,
            )
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(oauth2_redirect, swagger_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
    app.add_route(STATIC_PREFIX + "/{name}", static, include_in_schema=False)
