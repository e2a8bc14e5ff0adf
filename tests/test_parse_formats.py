"""Every format the installed extras support, from files these tests write with the formats' own libraries.

Each file holds a sentence naming its format; the test finds it in a chunk of that file. Formats whose
converter is a system binary (LibreOffice for .doc/.ppt) are checked to be skipped with the install hint
when the binary is missing.
"""

from __future__ import annotations

import email.message
import json
import shutil
from pathlib import Path

import pytest

from rerankforge.parsing.worker import missing_tool
from tests.parse_helpers import reasons, run_parse

HEADING = "Quarterly audit procedure"


def sentence(fmt: str) -> str:
    return f"The {fmt} audit checklist requires two signatures before the warehouse inventory is closed."


def _markdown(fmt: str) -> str:
    return f"# {HEADING}\n\n{sentence(fmt)}\n\nEvidence is kept for seven years in the records room.\n"


def _write_office(docs: Path) -> None:
    import openpyxl
    from docx import Document
    from pptx import Presentation

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = HEADING
    slide.placeholders[1].text = sentence("pptx")
    deck.save(docs / "deck.pptx")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["step", "rule"])
    sheet.append(["close", sentence("xlsx")])
    book.save(docs / "sheet.xlsx")
    document = Document()
    document.add_heading(HEADING, level=1)
    document.add_paragraph(sentence("docx"))
    document.save(docs / "memo.docx")


def _write_pdf(path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=16)
    pdf.cell(0, 10, HEADING)
    pdf.ln(14)
    pdf.set_font("helvetica", size=11)
    pdf.multi_cell(0, 6, sentence("pdf") + " " + "Evidence is kept for seven years in the records room. " * 3)
    pdf.output(str(path))


def _write_pandoc(docs: Path) -> None:
    import pypandoc

    source = _markdown("{fmt}")
    for fmt, extra in (("epub", ["--metadata", "title=Audit"]), ("odt", []), ("rtf", ["-s"])):
        text = source.replace("{fmt}", fmt)
        pypandoc.convert_text(text, fmt, format="md", outputfile=str(docs / f"book.{fmt}"), extra_args=extra)
    (docs / "guide.rst").write_text(f"{HEADING}\n{'=' * len(HEADING)}\n\n{sentence('rst')}\n")
    (docs / "notes.org").write_text(f"* {HEADING}\n{sentence('org')}\n")


def _write_text_formats(docs: Path) -> None:
    (docs / "readme.md").write_text(_markdown("md"))
    (docs / "readme.markdown").write_text(_markdown("markdown"))
    (docs / "notes.txt").write_text(f"{HEADING}\n\n{sentence('txt')}\n")
    html = f"<html><body><h1>{HEADING}</h1><p>{{}}</p></body></html>"
    (docs / "page.html").write_text(html.format(sentence("html")))
    (docs / "page.htm").write_text(html.format(sentence("htm")))
    (docs / "table.csv").write_text(f'step,rule\nclose,"{sentence("csv")}"\n')
    (docs / "table.tsv").write_text(f"step\trule\nclose\t{sentence('tsv')}\n")
    (docs / "record.xml").write_text(f"<doc><title>{HEADING}</title><p>{sentence('xml')}</p></doc>")
    (docs / "export.json").write_text(json.dumps({"title": HEADING, "body": sentence("json")}))
    mail = email.message.EmailMessage()
    mail["Subject"], mail["From"], mail["To"] = HEADING, "audit@example.com", "staff@example.com"
    mail.set_content(sentence("eml"))
    (docs / "mail.eml").write_bytes(bytes(mail))


PANDOC_FORMATS = ["epub", "odt", "rtf", "rst", "org"]
PURE_PYTHON_FORMATS = ["md", "markdown", "txt", "html", "htm", "csv", "tsv", "xml", "json", "eml", "pdf", "docx"]
PURE_PYTHON_FORMATS += ["pptx", "xlsx"]
HAS_PANDOC = missing_tool(".epub") is None


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, dict]:
    docs = tmp_path_factory.mktemp("formats")
    _write_text_formats(docs)
    _write_office(docs)
    _write_pdf(docs / "audit.pdf")
    if HAS_PANDOC:
        _write_pandoc(docs)
    (docs / "legacy.doc").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512)
    return run_parse(docs, tmp_path_factory.mktemp("run"), near_duplicate_threshold=None)


def _chunks_of(parsed: tuple[list, dict], fmt: str) -> list:
    chunks, report = parsed
    mine = [c for c in chunks if c.source.endswith(f".{fmt}")]
    assert mine, f".{fmt}: no chunks; skipped: {reasons(report)}"
    return mine


@pytest.mark.parametrize("fmt", PURE_PYTHON_FORMATS)
def test_pure_python_format_is_parsed(parsed, fmt: str) -> None:
    mine = _chunks_of(parsed, fmt)
    assert any(sentence(fmt) in " ".join(c.text.split()) for c in mine), [c.text for c in mine]
    assert all(c.metadata.get("filetype") and c.tokens for c in mine)


@pytest.mark.parametrize("fmt", ["md", "html", "docx", "pptx"])
def test_headings_become_titles(parsed, fmt: str) -> None:
    assert any(c.title == HEADING for c in _chunks_of(parsed, fmt))


@pytest.mark.skipif(not HAS_PANDOC, reason="needs pandoc: pip install pypandoc-binary (or apt-get install pandoc)")
@pytest.mark.parametrize("fmt", PANDOC_FORMATS)
def test_pandoc_format_is_parsed(parsed, fmt: str) -> None:
    mine = _chunks_of(parsed, fmt)
    assert any(sentence(fmt) in " ".join(c.text.split()) for c in mine)
    assert any(c.title == HEADING for c in mine)


def test_a_format_whose_converter_is_missing_is_skipped_with_the_install_hint(parsed) -> None:
    if shutil.which("soffice"):
        pytest.skip("LibreOffice is installed here, so .doc is converted rather than skipped")
    kind, reason = reasons(parsed[1])["legacy.doc"]
    assert kind == "missing_tool" and "apt-get install libreoffice-core" in reason


def test_no_format_was_skipped_unexpectedly(parsed) -> None:
    _, report = parsed
    assert set(reasons(report)) <= {"legacy.doc"}
    assert report["files_parsed"] == len(PURE_PYTHON_FORMATS) + (len(PANDOC_FORMATS) if HAS_PANDOC else 0)


def test_hi_res_pdf_without_its_ocr_extras_is_skipped_with_what_to_install(tmp_path: Path) -> None:
    if missing_tool(".pdf", "hi_res") is None:
        pytest.skip("unstructured's OCR extras and tesseract are installed here: hi_res would run")
    docs = tmp_path / "docs"
    docs.mkdir()
    _write_pdf(docs / "scan.pdf")
    (docs / "notes.md").write_text(_markdown("md"))
    chunks, report = run_parse(docs, tmp_path / "run", pdf_strategy="hi_res")
    kind, reason = reasons(report)["scan.pdf"]
    assert kind == "missing_tool" and "parse.pdf_strategy 'hi_res' needs" in reason and "or use 'fast'" in reason
    assert {c.source for c in chunks} == {"notes.md"}
