"""The parse stage on real files of every example format, and on bad ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rerankforge.artifacts import Chunk
from tests.parse_helpers import reasons, run_parse


@pytest.fixture(scope="module")
def example_chunks(tmp_path_factory: pytest.TempPathFactory, example_docs: Path) -> tuple[list[Chunk], dict]:
    return run_parse(example_docs, tmp_path_factory.mktemp("run"))


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
    assert all(len(c.text) <= 1200 and c.tokens <= 189 for c in mine)  # 256 - 64 query tokens - 3 special
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
    again, _ = run_parse(example_docs, tmp_path / "again")
    assert [c.model_dump() for c in again] == [c.model_dump() for c in chunks]


def test_bad_files_are_skipped_with_reasons_and_good_ones_kept(tmp_path: Path, example_docs: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(example_docs / "onboarding-guide.md", docs)
    (docs / "zero.txt").write_bytes(b"")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\n this is not really a pdf \x00\x01\x02")
    (docs / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 32)
    (docs / ".hidden.md").write_text("# Secret\n\nNot to be indexed because hidden files are skipped.")
    chunks, report = run_parse(docs, tmp_path / "run")
    why = reasons(report)
    assert set(why) == {"zero.txt", "broken.pdf", "photo.jpg"}
    assert why["zero.txt"] == ("empty", "empty file")
    assert why["photo.jpg"] == ("unsupported", "unsupported file type '.jpg'")
    assert why["broken.pdf"][0] == "corrupted" and "damaged PDF" in why["broken.pdf"][1]
    assert report["skipped_by_reason"] == {"corrupted": 1, "empty": 1, "unsupported": 1}
    assert report["ignored"] == {"hidden": 1}
    assert report["files_parsed"] == 1 and {c.source for c in chunks} == {"onboarding-guide.md"}


def test_chunk_size_follows_the_config(tmp_path: Path, example_docs: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(example_docs / "navcore-release-notes.md", docs)
    small, _ = run_parse(docs, tmp_path / "a", max_characters=300, new_after_n_characters=200, max_tokens=500)
    large, _ = run_parse(docs, tmp_path / "b", max_characters=2000, new_after_n_characters=1500, max_tokens=500)
    assert len(small) > len(large)
    assert all(len(c.text) <= 300 for c in small)


def test_chunks_fit_the_cross_encoder_in_its_own_tokens(tmp_path: Path, example_docs: Path, minilm_path: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    # train.max_length 128 - 64 query tokens - 3 special tokens of a (query, passage) pair = 61 per chunk
    chunks, report = run_parse(example_docs, tmp_path / "run", train={"max_length": 128})
    assert report["max_tokens"] == 61 and report["tokenizer"] == "all-MiniLM-L6-v2"
    lengths = [len(tokenizer(c.text, add_special_tokens=False)["input_ids"]) for c in chunks]
    assert max(lengths) <= 61
    assert [c.tokens for c in chunks] == lengths
    assert report["tokens"] == sum(lengths)
    # 1200-character sections are ~250 tokens: many would have been truncated, so they were split
    assert report["chunks_over_token_limit"] >= 10
    query = "how long does the HX-900 battery last on one charge in cold weather"
    pairs = tokenizer([query] * len(chunks), [c.text for c in chunks])["input_ids"]
    assert max(map(len, pairs)) <= 128


def test_titles_are_carried_and_optionally_prefixed(tmp_path: Path, example_docs: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(example_docs / "navcore-release-notes.md", docs)
    plain, _ = run_parse(docs, tmp_path / "a", max_tokens=40)
    prefixed, _ = run_parse(docs, tmp_path / "b", max_tokens=40, title_prefix=True)
    assert all(c.title for c in plain)  # continuation pieces of a long section keep its title
    assert any(c.metadata.get("headings") for c in plain)
    assert all(c.text.startswith(c.title) for c in prefixed)
    assert not all(c.text.startswith(c.title) for c in plain)
    assert all(c.tokens <= 40 for c in prefixed)


def test_no_download_of_the_spacy_model(tmp_path: Path, example_docs: Path, loopback_only: list) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(example_docs / "hx-900-operator-manual.pdf", docs)
    chunks, _ = run_parse(docs, tmp_path / "run")
    assert chunks and loopback_only == []
