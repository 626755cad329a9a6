"""Audit rows for auditors: CSV (every field, before/after as JSON) and PDF (the assistant's
report writer, cloud/assistant/pdf.py, with a table and the verification result)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cloud.assistant.pdf import _Writer

CSV_COLUMNS = (
    "category",
    "seq",
    "at",
    "actor",
    "role",
    "ip",
    "user_agent",
    "source",
    "action",
    "resource",
    "outcome",
    "before",
    "after",
    "detail",
    "hash",
    "prev_hash",
)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = str(value)
    # Spreadsheets run a cell that starts with = + - @ as a formula (CSV injection).
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(rows: Iterable[Mapping[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in CSV_COLUMNS])
    return buffer.getvalue().encode("utf-8")


def _short(value: Any, limit: int = 60) -> str:
    if value in (None, {}, []):
        return ""
    text = (
        json.dumps(value, sort_keys=True, ensure_ascii=False)
        if not isinstance(value, str)
        else value
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_pdf(
    rows: Sequence[Mapping[str, Any]],
    filters: Mapping[str, Any],
    verification: Mapping[str, Any] | None,
    generated_by: str,
    generated_at: str,
) -> bytes:
    writer = _Writer()
    writer.heading("Rig Alpha audit trail", 16)
    writer.para(f"Generated {generated_at} by {generated_by}.")
    shown = {k: v for k, v in filters.items() if v not in (None, "")}
    writer.para("Filters: " + (", ".join(f"{k}={v}" for k, v in shown.items()) or "none"))
    if verification is not None:
        problem = verification.get("problem")
        writer.heading("Chain verification", 12)
        writer.para(
            "Intact: every chain verified"
            + (
                f", {verification.get('checkpoints_checked', 0)} signed checkpoint(s) checked"
                if verification.get("signature_checked")
                else " (no verification key configured: signatures not checked)"
            )
            if problem is None
            else f"TAMPERED: {problem['category']} row {problem['seq']}: {problem['message']}"
        )
    writer.heading(f"{len(rows)} event(s), newest first", 12)
    writer.table(
        ["Time (UTC)", "Actor", "IP", "Action", "Resource", "Outcome", "Change"],
        [
            [
                str(r.get("at", ""))[:19].replace("T", " "),
                f"{r.get('actor') or ''} ({r.get('role') or '-'})",
                r.get("ip") or "",
                r.get("action"),
                _short(r.get("resource"), 40),
                r.get("outcome"),
                _short({"before": r.get("before"), "after": r.get("after")})
                if r.get("before") is not None or r.get("after") is not None
                else "",
            ]
            for r in rows
        ],
    )
    writer.para(
        "Each event carries the SHA-256 of its content chained to the previous event's hash; "
        "the CSV export lists them for independent checking (docs/audit.md)."
    )
    return bytes(writer.pdf.output())
