"""The operator dashboard's pages and static files, served by the cloud API itself.

No CDN and no inline code: every page is a static HTML file whose scripts are ES modules
under ``/static/js``; three.js and uPlot come from ``node_modules`` (installed from the npm
lock file by ``npm ci --prefix cloud/dashboard``) through an explicit allow-list, so nothing
else in ``node_modules`` is reachable. Every response carries a strict Content-Security-Policy
(no 'unsafe-inline', no 'unsafe-eval').

Pages need a session: a visitor without one is sent to ``/login?next=...``; ``/admin`` is for
the admin role only (403 page otherwise); ``/machines/{id}`` only for users assigned that
machine. The data itself comes from the JSON API and the WebSocket stream, which enforce the
same rules on their own. ``/anomalies/{id}`` shows an anomaly and its root-cause report.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from shared.message import MACHINE_ID_RE

HERE = Path(__file__).resolve().parent
PAGES_DIR = HERE / "pages"
STATIC_DIR = HERE / "static"
NODE_MODULES = HERE / "node_modules"

# The only files of node_modules the browser may load: ``/static/vendor/<name>``.
VENDOR_FILES: dict[str, str] = {
    "three.module.js": "three/build/three.module.js",
    "three.core.js": "three/build/three.core.js",
    "uPlot.esm.js": "uplot/dist/uPlot.esm.js",
    "uPlot.min.css": "uplot/dist/uPlot.min.css",
}

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".html": "text/html; charset=utf-8",
}

router = APIRouter(include_in_schema=False, tags=["dashboard"])


def _secure(response: Response, *, cache: str = "no-store") -> Response:
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = cache
    return response


async def _current_user(request: Request) -> Any:
    # Imported here: the dashboard package must import without the API package's services.
    from cloud.api.deps import get_services
    from cloud.api.guards import optional_user

    return await optional_user(request, get_services(request))


CurrentUser = Annotated[Any, Depends(_current_user)]


# Every logged-in page has the same main navigation: kept once, in pages/_nav.html, and put
# where a page says <!--#main-nav--> (which links a user may follow is chrome.js's business).
MAIN_NAV_MARK = "<!--#main-nav-->"


def _page(name: str, status: int = 200) -> Response:
    body = (PAGES_DIR / name).read_text(encoding="utf-8")
    if MAIN_NAV_MARK in body:
        nav = (PAGES_DIR / "_nav.html").read_text(encoding="utf-8").rstrip("\n")
        body = body.replace(MAIN_NAV_MARK, nav, 1)
    return _secure(HTMLResponse(body, status_code=status))


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _secure(RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303))


@router.get("/")
async def overview(request: Request, user: CurrentUser) -> Response:
    return _page("overview.html") if user is not None else _to_login(request)


@router.get("/login")
async def login_page() -> Response:
    return _page("login.html")


@router.get("/account")
async def account_page(request: Request, user: CurrentUser) -> Response:
    # Change your own password (any role).
    return _page("account.html") if user is not None else _to_login(request)


@router.get("/machines/{machine_id}")
async def machine_page(machine_id: str, request: Request, user: CurrentUser) -> Response:
    if user is None:
        return _to_login(request)
    if not MACHINE_ID_RE.match(machine_id):
        return _page("404.html", 404)
    if not user.may_see(machine_id):
        return _page("403.html", 403)
    return _page("machine.html")


@router.get("/anomalies")
async def anomalies_page(request: Request, user: CurrentUser) -> Response:
    # The fleet feed: the API filters it to the machines the user may see.
    return _page("anomalies.html") if user is not None else _to_login(request)


@router.get("/edges")
async def edges_page(request: Request, user: CurrentUser) -> Response:
    """The edge fleet: operators and admins, like GET /api/v1/edges."""
    if user is None:
        return _to_login(request)
    if getattr(user.role, "value", user.role) not in ("admin", "operator"):
        return _page("403.html", 403)
    return _page("edges.html")


@router.get("/anomalies/{anomaly_id}")
async def anomaly_page(anomaly_id: str, request: Request, user: CurrentUser) -> Response:
    # Whether the user may see the anomaly's machine is the API's answer (404 otherwise),
    # which the page shows; the page itself only needs a session.
    if user is None:
        return _to_login(request)
    if not anomaly_id.isdigit() or len(anomaly_id) > 18:
        return _page("404.html", 404)
    return _page("anomaly.html")


# The admin area's tabs: one page (one header) that shows the section its path names.
ADMIN_SECTIONS = frozenset({"users", "keys", "models", "sensors", "fleet"})


@router.get("/admin")
async def admin_page(request: Request, user: CurrentUser) -> Response:
    if user is None:
        return _to_login(request)
    if getattr(user.role, "value", user.role) != "admin":
        return _page("403.html", 403)
    return _page("admin.html")


@router.get("/audit")
async def audit_page(request: Request, user: CurrentUser) -> Response:
    # The audit trail viewer: admins only, like the API behind it.
    if user is None:
        return _to_login(request)
    if getattr(user.role, "value", user.role) != "admin":
        return _page("403.html", 403)
    return _page("audit.html")


@router.get("/admin/{section}")
async def admin_section(section: str, request: Request, user: CurrentUser) -> Response:
    if user is None:
        return _to_login(request)
    if getattr(user.role, "value", user.role) != "admin":
        return _page("403.html", 403)
    return _page("admin.html") if section in ADMIN_SECTIONS else _page("404.html", 404)


def _file(path: Path) -> Response:
    media_type = _MEDIA_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    # Revalidated on every load (ETag / Last-Modified): a deploy is seen at once.
    return _secure(FileResponse(path, media_type=media_type), cache="no-cache")


def _not_found(message: str) -> Response:
    return _secure(Response(message, status_code=404, media_type="text/plain; charset=utf-8"))


@router.get("/static/vendor/{name}")
async def vendor_file(name: str) -> Response:
    relative = VENDOR_FILES.get(name)
    if relative is None:
        return _not_found("not a served front-end library")
    path = NODE_MODULES / relative
    if not path.is_file():
        return _not_found(
            f"{name} is not installed: run `npm ci --prefix cloud/dashboard` (see README)"
        )
    return _file(path)


@router.get("/static/{path:path}")
async def static_file(path: str) -> Response:
    target = (STATIC_DIR / path).resolve()
    if not target.is_relative_to(STATIC_DIR) or not target.is_file():
        return _not_found("no such file")
    return _file(target)


@router.get("/favicon.ico")
async def favicon() -> Response:
    return _file(STATIC_DIR / "img" / "favicon.svg")
