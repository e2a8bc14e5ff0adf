"""Stage 1: partition every file under the docs folder with unstructured and cut it into reranker-sized chunks.

Files are found by :mod:`rerankforge.parsing.discover`, parsed in worker processes by
:mod:`rerankforge.parsing.worker` (chunks measured in the backbone's tokens), recorded one by one in
``parse/files.jsonl`` (:mod:`rerankforge.parsing.state`), and de-duplicated across the corpus
(:mod:`rerankforge.parsing.dedup`). A file that cannot be parsed is skipped with its reason in
``parse/report.json``; only a folder where no file yields text is an error. ``parse/changes.json`` lists the
files added, changed and removed since the previous run and the chunk ids that came and went.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from rerankforge.artifacts import ParseReport, SkippedFile, text_sha256, write_json, write_jsonl
from rerankforge.config import BuildConfig
from rerankforge.errors import InputError
from rerankforge.parsing.chunking import TokenLimit, token_limit
from rerankforge.parsing.discover import Discovery, discover
from rerankforge.parsing.state import FileRecord, ParseState, changes, read_inventory
from rerankforge.stage import StageContext, StageResult

VERSION = "2"
logger = logging.getLogger(__name__)

# Settings that do not change a single file's chunks: changing them re-uses every file's record.
_NOT_PER_FILE = {"include", "exclude", "include_hidden", "follow_symlinks", "max_file_mb", "max_unzipped_mb"}
_NOT_PER_FILE |= {"workers", "timeout_s", "dedup", "near_duplicate_threshold"}


def signature(cfg: BuildConfig, limit: TokenLimit) -> str:
    """Hash of what shapes one file's chunks: this stage's version, the chunking settings, the tokenizer."""
    settings = cfg.parse.model_dump(mode="json", exclude=_NOT_PER_FILE)
    material = {"version": VERSION, "settings": settings, "tokenizer": limit.tokenizer_sha256, "max": limit.max_tokens}
    return text_sha256(json.dumps(material, sort_keys=True))


def cache_inputs(cfg: BuildConfig) -> dict[str, Any]:
    """The documents' content (as parse will read them) and the tokenizer that measures chunks."""
    docs = Path(cfg.docs)
    found = discover(docs, cfg.parse)
    state = ParseState(cfg.resolved_run_dir() / "parse" / "files.jsonl")
    files: dict[str, str] = {}
    for relative in found.files:
        try:
            files[relative] = state.fingerprint(docs, relative)[2]
        except OSError as exc:  # unreadable or vanished: parse reports it; the key still notices
            files[relative] = f"unreadable: {type(exc).__name__}"
    files.update({s.path: f"skipped: {s.kind}" for s in found.skipped})
    return {"files": files, "chunking": chunking_key(cfg)}


def chunking_key(cfg: BuildConfig) -> dict[str, Any]:
    """What the backbone gives the chunks: its tokenizer's content and the chunk limit in its tokens, not its name,
    so another backbone with the same tokenizer (a pretrained reranker of the same family) reuses every chunk, and
    with them the queries, candidates and grades built on them."""
    limit = token_limit(cfg, None)
    return {"tokenizer": limit.tokenizer_sha256, "max_tokens": limit.max_tokens}


def run(ctx: StageContext) -> StageResult:
    from rerankforge.parsing.pool import parse_files, worker_count
    from rerankforge.parsing.worker import FileJob

    cfg = ctx.config.parse
    docs = Path(ctx.config.docs)
    found = discover(docs, cfg)
    if not found.files and not found.skipped:
        raise InputError(
            f"No files found in {docs} (hidden and excluded files are ignored: {dict(found.ignored) or 'none'}). "
            "Put your documents (pdf, docx, md, html, txt, ...) in that folder, or pass the folder that holds them."
        )
    limit = token_limit(ctx.config, ctx.out / "tokenizer")
    sig = signature(ctx.config, limit)
    state = ParseState(ctx.out / "files.jsonl")
    skipped: list[SkippedFile] = list(found.skipped)
    records: dict[str, FileRecord] = {}
    stats: dict[str, tuple[int, int, str]] = {}
    jobs: list[FileJob] = []
    for relative in found.files:
        try:
            stats[relative] = state.fingerprint(docs, relative)
        except FileNotFoundError:
            skipped.append(SkippedFile(path=relative, kind="vanished", reason="the file disappeared during the run"))
            continue
        except OSError as exc:  # permissions, an I/O error on a failing disk or share
            reason = f"no permission to read it ({exc.strerror})" if isinstance(exc, PermissionError) else str(exc)
            skipped.append(SkippedFile(path=relative, kind="unreadable", reason=reason))
            continue
        old = state.records.get(relative)
        if old is not None and old.sha256 == stats[relative][2] and old.signature == sig:
            records[relative] = old
        else:
            jobs.append(FileJob(str(docs), relative, cfg, limit))
    reused = len(records)
    total = len(found.files)
    ctx.progress(reused, total, f"{reused} unchanged" if reused else "")
    try:
        for result in parse_files(jobs, worker_count(cfg.workers)):
            if result.skipped is not None:
                skipped.append(result.skipped)
            else:
                size, mtime_ns, sha = stats[result.relative]
                record = FileRecord(
                    path=result.relative, size=size, mtime_ns=mtime_ns, sha256=sha, signature=sig,
                    chunks=result.chunks, over_limit=result.over_limit,
                )  # fmt: skip
                state.append(record)
                records[result.relative] = record
            ctx.progress(len(records) + len(skipped) - len(found.skipped), total, result.relative)
    finally:
        state.close()
    state.compact(records)
    return _finish(ctx, found, records, skipped, reused, stats, limit)


def _finish(
    ctx: StageContext,
    found: Discovery,
    records: dict[str, FileRecord],
    skipped: list[SkippedFile],
    reused: int,
    stats: dict[str, tuple[int, int, str]],
    limit: TokenLimit,
) -> StageResult:
    """De-duplicate, write chunks, corpus, changes and report; refuse a corpus with no text at all."""
    from rerankforge.parsing.dedup import remove_duplicates

    cfg = ctx.config.parse
    docs = Path(ctx.config.docs)
    all_chunks = [chunk for path in sorted(records) for chunk in records[path].chunks]
    duplicates = []
    chunks = all_chunks
    if cfg.dedup:
        chunks, duplicates = remove_duplicates(all_chunks, cfg.near_duplicate_threshold)
    skipped.sort(key=lambda s: s.path)
    inventory = {path: stat[2] for path, stat in sorted(stats.items())}
    previous = read_inventory(ctx.out / "inventory.json")
    diff = changes(previous, inventory)
    report = ParseReport(
        files_seen=len(found.files) + len(found.skipped),
        files_parsed=len(records),
        files_reused=reused,
        skipped=skipped,
        skipped_by_reason=dict(sorted(Counter(s.kind for s in skipped).items())),
        ignored=dict(sorted(found.ignored.items())),
        chunks=len(chunks),
        characters=sum(len(c.text) for c in chunks),
        tokens=sum(c.tokens or 0 for c in chunks),
        max_tokens=limit.max_tokens,
        tokenizer=ctx.config.train.backbone,
        chunks_over_token_limit=sum(r.over_limit for r in records.values()),
        duplicates_removed=dict(Counter(d.kind for d in duplicates)),
        changes={k: len(v) for k, v in diff.items()},
    )
    write_json(ctx.out / "report.json", report.model_dump(mode="json"))
    if not chunks:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:5])
        raise InputError(
            f"No file in {docs} could be parsed ({report.files_seen} seen; {reasons}). "
            "Add documents in a supported format (pdf, docx, md, html, txt, ...)."
        )
    old_ids = _previous_chunk_ids(ctx.out / "chunks.jsonl")
    new_ids = {c.id for c in chunks}
    write_jsonl(ctx.out / "chunks.jsonl", chunks)
    write_jsonl(ctx.out / "corpus.jsonl", ({"_id": c.id, "title": c.title or "", "text": c.text} for c in chunks))
    write_jsonl(ctx.out / "duplicates.jsonl", (d.__dict__ for d in duplicates))
    diff_ids = {"chunks_added": sorted(new_ids - old_ids), "chunks_removed": sorted(old_ids - new_ids)}
    write_json(ctx.out / "changes.json", {**{k: v for k, v in diff.items() if k != "unchanged"}, **diff_ids})
    write_json(ctx.out / "inventory.json", inventory)
    summary = report.model_dump(mode="json", exclude={"skipped"})
    summary["files_skipped"] = len(skipped)
    files = ["chunks.jsonl", "corpus.jsonl", "report.json", "changes.json", "duplicates.jsonl"]
    return StageResult(files=[f"parse/{name}" for name in files], summary=summary)


def _previous_chunk_ids(path: Path) -> set[str]:
    """Chunk ids of the previous run's chunks.jsonl, read leniently (it is about to be replaced)."""
    if not path.is_file():
        return set()
    ids = set()
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                ids.add(json.loads(line)["id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return ids
