"""The parse stage on real files of every example format, and on bad ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rerankforge import load_config
from rerankforge.artifacts import Chunk, read_jsonl
from rerankforge.pipeline import StageContext
from rerankforge.stages import parse


def _run_parse(docs: Path, run_dir: Path, **parse_cfg: object) -> tuple[list[Chunk], dict]:
    cfg = load_config(None, docs=str(docs), run_dir=str(run_dir), parse=parse_cfg or None)
    ctx = StageContext(cfg, run_dir, lambda *a: None)
    ctx.stage = "parse"
    ctx.out.mkdir(parents=True, exist_ok=True)
    result = parse.run(ctx)
    assert sorted(result.files) == ["parse/chunks.jsonl", "parse/corpus.jsonl", "parse/report.json"]
    report = json.loads((run_dir / "parse" / "report.json").read_text())
    return read_jsonl(run_dir / "parse" / "chunks.jsonl", Chunk), report


@pytest.fixture(scope="module")
def example_chunks(tmp_path_factory: pytest.TempPathFactory, example_docs: Path) -> tuple[list[Chunk], dict]:
    return _run_parse(example_docs, tmp_path_factory.mktemp("run"))


def test_every_example_file_is_parsed_recursively(example_chunks, example_docs: Path) -> None:
    chunks, report = example_chunks
    files = {str(p.relative_to(example_docs)) for p in example_docs.rglob("*") if p.is_file()}
    assert report["files_seen"] == len(files) == report["files_parsed"]
    assert report["skipped"] == []
    assert {c.source for c in chunks} == files
    assert "policies/HR Leave Policy.txt" in files  # spaces and subfolders


@pytest.mark.parametrize("suffix", ["md", "html", "txt", "pdf", "docx"])
def test_each_format_gives_titled_chunks_within_the_size_limit(example_chunks, suffix: str) -> None:
    chunks, _ = example_chunks
    mine = [c for c in chunks if c.source.endswith(f".{suffix}")]
    assert len(mine) >= 3, f"{suffix}: too few chunks"
    assert all(len(c.text) <= 1200 for c in mine)
    assert any(c.title for c in mine)
    assert all(c.metadata.get("filetype") for c in mine)


def test_pdf_text_and_page_numbers_survive(example_chunks) -> None:
    chunks, _ = example_chunks
    pdf = [c for c in chunks if c.source.endswith(".pdf")]
    assert any("HX-900" in c.text for c in pdf)
    assert all(c.metadata.get("pages") for c in pdf)


def test_chunk_ids_are_unique_and_stable(example_chunks, example_docs: Path, tmp_path: Path) -> None:
    chunks, _ = example_chunks
    assert len({c.id for c in chunks}) == len(chunks)
    again, _ = _run_parse(example_docs, tmp_path / "again")
    assert [c.model_dump() for c in again] == [c.model_dump() for c in chunks]


def test_bad_files_are_skipped_with_reasons_and_good_ones_kept(tmp_path: Path, example_docs: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(example_docs / "onboarding-guide.md", docs)
    (docs / "zero.txt").write_bytes(b"")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\n this is not really a pdf \x00\x01\x02")
    (docs / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 32)
    (docs / ".hidden.md").write_text("# Secret\n\nNot to be indexed because hidden files are skipped.")
    chunks, report = _run_parse(docs, tmp_path / "run")
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"zero.txt", "broken.pdf", "photo.jpg"}
    assert reasons["zero.txt"] == "empty file"
    assert "unsupported file type '.jpg'" in reasons["photo.jpg"]
    assert reasons["broken.pdf"]
    assert report["files_parsed"] == 1 and {c.source for c in chunks} == {"onboarding-guide.md"}


def test_chunk_size_follows_the_config(tmp_path: Path, example_docs: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(example_docs / "navcore-release-notes.md", docs)
    small, _ = _run_parse(docs, tmp_path / "a", max_characters=300, new_after_n_characters=200)
    large, _ = _run_parse(docs, tmp_path / "b", max_characters=2000, new_after_n_characters=1500)
    assert len(small) > len(large)
    assert all(len(c.text) <= 300 for c in small)


def test_no_download_of_the_spacy_model(tmp_path: Path, example_docs: Path, loopback_only: list) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(example_docs / "hx-900-operator-manual.pdf", docs)
    chunks, _ = _run_parse(docs, tmp_path / "run")
    assert chunks and loopback_only == []
