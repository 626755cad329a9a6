"""Writes transmitter_datasheet.pdf, the spec-sheet PDF (with a text layer) of the assistant's
tests. Run once (``python -m cloud.assistant.testdata.make_datasheet_pdf``); the PDF is
committed, so the tests do not depend on this script's output staying byte-identical."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

HERE = Path(__file__).resolve().parent
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

PAGE_1 = [
    ("title", "HPT-5000 Hydraulic Pressure Transmitter"),
    ("text", "Piezoresistive stainless-steel transmitter for hydraulic power units and test rigs."),
    ("head", "Technical data"),
    ("row", "Measuring range", "0 … 5000 psi"),
    ("row", "Accuracy", "±0.25 % FS (BFSL)"),
    ("row", "Output signal", "4–20 mA, 2-wire"),
    ("row", "Supply voltage", "10 to 30 VDC"),
    ("row", "Proof pressure", "10000 psi"),
    ("row", "Operating temperature", "-40 to 125 °C"),
    ("row", "Process connection", '1/4" NPT male'),
]
PAGE_2 = [
    ("head", "Recommended alarm settings"),
    ("row", "Low alarm", "500 psi"),
    ("row", "High alarm", "4500 psi"),
    ("text", "Response time < 2 ms. Ingress protection IP67."),
]


def build(path: Path) -> None:
    pdf = FPDF()
    pdf.set_title("HPT-5000 datasheet")
    pdf.set_creation_date(datetime(2026, 1, 7, tzinfo=UTC))  # reproducible bytes
    pdf.add_font("DejaVu", "", str(FONT))
    for page in (PAGE_1, PAGE_2):
        pdf.add_page()
        for kind, *text in page:
            if kind == "title":
                pdf.set_font("DejaVu", size=16)
                pdf.cell(0, 10, text[0], new_x="LMARGIN", new_y="NEXT")
            elif kind == "head":
                pdf.set_font("DejaVu", size=13)
                pdf.cell(0, 10, text[0], new_x="LMARGIN", new_y="NEXT")
            elif kind == "row":
                pdf.set_font("DejaVu", size=11)
                pdf.cell(0, 7, f"{text[0]}: {text[1]}", new_x="LMARGIN", new_y="NEXT")
            else:
                pdf.set_font("DejaVu", size=11)
                pdf.multi_cell(0, 7, text[0], new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))


if __name__ == "__main__":
    build(HERE / "transmitter_datasheet.pdf")
