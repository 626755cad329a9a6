"""``check-config --probe`` for the HTTP output: ask the cloud whether this edge's key gets in.

``GET <url>/check`` (``/api/v1/ingest/check``) goes through the same key guard and edge scope
as ``POST /api/v1/ingest`` and stores nothing, sent with the output's own client (TLS
verification, CA file, timeout, ``X-API-KEY``).
"""

from __future__ import annotations

import httpx

from edge.inputs.base import ProbeResult
from edge.outputs.http.config import HttpOutputConfig
from edge.outputs.http.output import http_client

INPUT = "output http"


def check_url(config: HttpOutputConfig) -> str:
    """The key check beside the configured ingest URL (``.../api/v1/ingest/check``)."""
    url = httpx.URL(config.url)
    return str(url.copy_with(path=url.path.rstrip("/") + "/check", query=None))


def _key_source(config: HttpOutputConfig) -> str:
    ref = config.api_key_ref
    if ref is None:  # pragma: no cover - the config refuses a key without a source
        return "the key"
    if ref.file is not None:
        return f"the key of api_key_file {ref.file}"
    return f"the key of api_key_env {ref.env}"


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("error") or body)[:200]
    return str(body)[:200]


def probe_http(config: HttpOutputConfig, edge_id: str) -> list[ProbeResult]:
    """One line: does the cloud at ``url`` take ``edge_id``'s readings with this key."""
    url = check_url(config)
    try:
        client = http_client(config)
    except ValueError as exc:  # the key's file or variable cannot be read
        return [ProbeResult(INPUT, config.url, False, str(exc))]
    try:
        with client:
            response = client.get(url, params={"edge_id": edge_id})
    except httpx.HTTPError as exc:
        return [
            ProbeResult(INPUT, config.url, False, f"not reachable: {type(exc).__name__}: {exc}")
        ]
    status = response.status_code
    if status == 200:
        key_edge = response.json().get("key_edge")
        whose = "the bootstrap key (any edge)" if key_edge == "default" else f"edge {key_edge}"
        detail = f"API key accepted for edge {edge_id} ({whose}); nothing stored"
        return [ProbeResult(INPUT, config.url, True, detail)]
    if status == 401:
        detail = f"API key refused (HTTP 401): {_key_source(config)}: {_reason(response)}"
    elif status == 403:
        detail = (
            f"API key may not write edge_id {edge_id!r} (HTTP 403): {_key_source(config)}: "
            f"{_reason(response)}"
        )
    elif status in (404, 405):
        detail = (
            f"no ingest API at {url} (HTTP {status}): url must be the cloud's "
            "/api/v1/ingest (a cloud older than this edge has no key check)"
        )
    else:
        detail = f"HTTP {status} from {url}: {_reason(response)}"
    return [ProbeResult(INPUT, config.url, False, detail)]
