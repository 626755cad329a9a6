"""Uploaded spec sheets as text: PDF (its text layer, the first pages), CSV, TXT and JSON.

Every line keeps its page and line number, so each value proposed from it can say where it
came from. A file that cannot be read is refused with a ``FieldError`` on ``file`` that says
what is wrong with it (and what would be accepted).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from cloud.fielderror import FieldError

KINDS = ("pdf", "csv", "txt", "json")
_MEDIA = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/csv": "csv",
    "text/plain": "txt",
    "application/json": "json",
    "text/json": "json",
}
# A spec sheet is a few pages; this keeps a hostile file from costing more than that.
MAX_LINES = 5000
MAX_LINE_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Line:
    page: int
    number: int  # 1-based within the page
    text: str


@dataclass(slots=True)
class SourceDocument:
    kind: str
    filename: str
    lines: list[Line] = field(default_factory=list)
    pages_read: int = 1
    pages_total: int = 1
    # CSV rows as dicts (header -> cell) and the JSON document, for the table readers.
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    document: Any = None

    def text(self, limit: int | None = None) -> str:
        """The text with page markers, for a model (cut at ``limit`` characters)."""
        parts: list[str] = []
        page = 0
        size = 0
        for line in self.lines:
            if line.page != page:
                page = line.page
                parts.append(f"--- page {page} ---")
            parts.append(line.text)
            size += len(line.text) + 1
            if limit is not None and size > limit:
                parts.append("--- (cut) ---")
                break
        return "\n".join(parts)


def detect_kind(filename: str, media_type: str | None, head: bytes) -> str:
    suffix = PurePosixPath(filename or "").suffix.lower().lstrip(".")
    if head.startswith(b"%PDF-"):
        return "pdf"
    if suffix in KINDS:
        if suffix == "pdf":
            raise FieldError("file", f"{filename!r} is named .pdf but is not a PDF")
        return suffix
    if suffix == "text":
        return "txt"
    base = (media_type or "").split(";")[0].strip().lower()
    if base in _MEDIA and _MEDIA[base] != "pdf":
        return _MEDIA[base]
    raise FieldError(
        "file",
        f"unsupported file type {suffix or base or 'unknown'!r}: upload a PDF (with a text "
        "layer), CSV, TXT or JSON spec sheet",
    )


def read_source(
    filename: str, media_type: str | None, data: bytes, pdf_pages: int
) -> SourceDocument:
    if not data:
        raise FieldError("file", "the file is empty")
    kind = detect_kind(filename, media_type, data[:8])
    if kind == "pdf":
        return _read_pdf(filename, data, pdf_pages)
    text = _decode(data)
    doc = SourceDocument(kind, filename)
    doc.lines = _lines(text, page=1)
    if kind == "csv":
        doc.rows = _csv_rows(text)
    elif kind == "json":
        try:
            doc.document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FieldError(
                "file", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        doc.lines = _json_lines(doc.document)
    if not any(line.text.strip() for line in doc.lines):
        raise FieldError("file", "the file has no text")
    return doc


def _decode(data: bytes) -> str:
    if b"\x00" in data[:4096]:
        raise FieldError("file", "a binary file: upload a PDF, CSV, TXT or JSON spec sheet")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _lines(text: str, page: int) -> list[Line]:
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        cleaned = re.sub(r"[ \t\u00a0]+", " ", raw).strip()[:MAX_LINE_CHARS]
        if cleaned:
            out.append(Line(page, number, cleaned))
        if len(out) >= MAX_LINES:
            break
    return out


def _read_pdf(filename: str, data: bytes, pdf_pages: int) -> SourceDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise FieldError("file", "the PDF is encrypted: upload an unprotected copy")
        total = len(reader.pages)
        doc = SourceDocument("pdf", filename, pages_total=total)
        doc.pages_read = min(total, pdf_pages)
        for index in range(doc.pages_read):
            text = reader.pages[index].extract_text() or ""
            doc.lines.extend(_lines(text, page=index + 1))
    except FieldError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise FieldError("file", f"the PDF cannot be read ({type(exc).__name__})") from None
    if not doc.lines:
        raise FieldError(
            "file",
            "the PDF has no text layer (a scan?): upload the vendor's original PDF, or the "
            "values as CSV or TXT",
        )
    return doc


def _csv_rows(text: str) -> list[tuple[int, dict[str, str]]]:
    dialect: type[csv.Dialect] = csv.excel
    # One column, or no consistent delimiter: read as plain CSV.
    with contextlib.suppress(csv.Error):
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    reader = csv.reader(io.StringIO(text), dialect)
    rows = [(i, [c.strip() for c in r]) for i, r in enumerate(reader, start=1) if any(r)]
    if not rows:
        return []
    _, header = rows[0]
    keys = [h.strip().lower() for h in header]
    return [(i, dict(zip(keys, r, strict=False))) for i, r in rows[1:MAX_LINES]]


def _json_lines(document: Any) -> list[Line]:
    """A JSON spec as "path: value" lines (the text extractor reads those too)."""
    out: list[Line] = []

    def walk(value: Any, path: str) -> None:
        if len(out) >= MAX_LINES:
            return
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
        else:
            out.append(Line(1, len(out) + 1, f"{path}: {value}"[:MAX_LINE_CHARS]))

    walk(document, "")
    return out
