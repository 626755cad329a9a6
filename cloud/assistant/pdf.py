"""A stored report as a PDF (fpdf2): the same sections as on the anomaly page.

Units and symbols (°, ±, µ, Ω, …) need a Unicode font: DejaVu Sans where the system has it
(Debian: fonts-dejavu-core), else the PDF core font with those characters spelt out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos

_FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
_SPELT = {
    "…": "...",
    "–": "-",
    "—": "-",
    "Ω": "Ohm",
    "σ": "sigma",
    "·": ".",
    "³": "3",
    "²": "2",
    "→": "->",
    "≥": ">=",
    "≤": "<=",
    "’": "'",
    "“": '"',
    "”": '"',
}


def _font(pdf: FPDF) -> tuple[str, bool]:
    for directory in _FONT_DIRS:
        regular, bold = directory / "DejaVuSans.ttf", directory / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            pdf.add_font("DejaVu", "", str(regular))
            pdf.add_font("DejaVu", "B", str(bold))
            return "DejaVu", True
    return "Helvetica", False


class _Writer:
    def __init__(self) -> None:
        self.pdf = FPDF(format="A4")
        self.pdf.set_auto_page_break(auto=True, margin=15)
        self.family, self.unicode = _font(self.pdf)
        self.pdf.add_page()

    def text(self, value: Any) -> str:
        text = "" if value is None else str(value)
        if self.unicode:
            return text
        for char, spelt in _SPELT.items():
            text = text.replace(char, spelt)
        return text.encode("latin-1", "replace").decode("latin-1")

    def heading(self, text: str, size: int = 13) -> None:
        self.pdf.ln(2)
        self.pdf.set_font(self.family, "B", size)
        self.pdf.multi_cell(0, 8, self.text(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.pdf.set_font(self.family, "", 10)

    def para(self, text: str) -> None:
        self.pdf.set_font(self.family, "", 10)
        self.pdf.multi_cell(0, 5.5, self.text(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def bullet(self, text: str, indent: float = 4) -> None:
        self.pdf.set_x(self.pdf.l_margin + indent)
        self.pdf.multi_cell(
            0,
            5.5,
            self.text(f"• {text}" if self.unicode else f"- {text}"),
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        self.pdf.set_font(self.family, "", 9)
        with self.pdf.table(text_align="LEFT", line_height=5) as table:
            row = table.row()
            for cell in header:
                row.cell(self.text(cell))
            for values in rows:
                row = table.row()
                for value in values:
                    row.cell(self.text(_short(value)))
        self.pdf.set_font(self.family, "", 10)


def _short(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render(stored: dict[str, Any]) -> bytes:
    """The PDF of ``stored`` (``reports.out``'s shape)."""
    report = stored["report"]
    anomaly = stored["anomaly"]
    w = _Writer()
    w.pdf.set_title(f"Root-cause report, anomaly {anomaly['id']}")
    w.pdf.set_author("Rig Alpha")
    w.heading(f"Root-cause report · anomaly {anomaly['id']} · machine {anomaly['machine_id']}", 15)
    produced = stored["model"] if stored["path"] == "model" else "offline writer"
    w.para(
        f"Version {stored['version']}, written {stored['created_at']} by {produced} "
        f"for {stored['created_by'] or 'unknown'}. Anomaly at {anomaly['timestamp']} "
        f"({anomaly['method']}, score {anomaly['score']})."
    )
    if stored.get("note"):
        w.para(f"Note: {stored['note']}")
    w.heading("Summary")
    w.para(report["summary"])
    confidence = report["confidence"]
    w.para(
        f"Confidence: {confidence['level']} ({confidence['score']}): {confidence.get('why', '')}"
    )
    w.heading("Likely causes")
    for rank, cause in enumerate(report["likely_causes"], start=1):
        w.pdf.set_font(w.family, "B", 10)
        w.pdf.multi_cell(
            0,
            5.5,
            w.text(f"{rank}. {cause['cause']} ({round(100 * cause['likelihood'])} %)"),
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
        w.pdf.set_font(w.family, "", 10)
        for evidence in cause["evidence"]:
            w.bullet(evidence)
    w.heading("Recommended actions")
    for action in report["recommended_actions"]:
        w.bullet(action)
    w.heading("Contributing sensors")
    w.table(
        ["sensor", "share", "value", "unit", "baseline", "z", "state"],
        [
            [
                s["sensor"],
                f"{round(100 * (s['share'] or 0))} %",
                s["value"],
                s["unit"],
                s["baseline_mean"],
                s["z"],
                s["threshold_state"],
            ]
            for s in report["contributing_sensors"]
        ],
    )
    w.heading("Readings cited")
    w.table(
        ["time", "sensor", "value", "what"],
        [
            [
                r["timestamp"],
                r["sensor"],
                f"{_short(r['value'])} {r['unit'] or ''}".strip(),
                r["what"],
            ]
            for r in report["readings_cited"]
        ],
    )
    w.heading("Similar past anomalies")
    similar = report["similar_anomalies"]
    rows = [
        [
            a["id"],
            a["machine_id"],
            a["timestamp"],
            a["similarity"],
            ", ".join(a["sensors"]),
            a.get("state"),
            a.get("note"),
        ]
        for a in [*similar["machine"], *similar["fleet"]]
    ]
    if rows:
        w.table(["id", "machine", "time", "similarity", "sensors", "state", "operator note"], rows)
    else:
        w.para("None found.")
    if report.get("threshold_changes"):
        w.heading("Recent threshold changes")
        w.table(
            ["sensor", "scope", "critical low", "critical high", "changed", "by"],
            [
                [
                    c["sensor"],
                    c["scope"],
                    c["critical_low"],
                    c["critical_high"],
                    c["changed_at"],
                    c["changed_by"],
                ]
                for c in report["threshold_changes"]
            ],
        )
    life = report.get("remaining_life")
    if life:
        w.heading("Remaining life")
        w.para(
            f"{life.get('rul_hours')} h (interval {life.get('low_hours')}–"
            f"{life.get('high_hours')} h), estimated {life.get('timestamp')}."
        )
    model = report.get("model_in_service")
    if model:
        w.heading("Detector")
        metrics = ", ".join(f"{k} {v}" for k, v in (model.get("metrics") or {}).items())
        w.para(
            f"Version {model.get('version')} ({model.get('strategy', '—')}, "
            f"{model.get('status', '—')}). {metrics}"
        )
    return bytes(w.pdf.output())
