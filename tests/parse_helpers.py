"""Run the parse stage alone on a folder, as the pipeline would, and read what it wrote."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rerankforge import load_config
from rerankforge.artifacts import Chunk, read_jsonl
from rerankforge.stage import StageContext
from rerankforge.stages import parse

PARSE_FILES = [
    "parse/changes.json", "parse/chunks.jsonl", "parse/corpus.jsonl", "parse/duplicates.jsonl", "parse/report.json",
]  # fmt: skip


def run_parse(
    docs: Path,
    run_dir: Path,
    progress: Callable[..., None] | None = None,
    train: dict[str, Any] | None = None,
    **parse_cfg: Any,
) -> tuple[list[Chunk], dict[str, Any]]:
    """Parse ``docs`` into ``run_dir`` (in-process unless ``workers`` is given); returns (chunks, report)."""
    parse_cfg.setdefault("workers", 1)
    cfg = load_config(None, docs=str(docs), run_dir=str(run_dir), parse=parse_cfg, train=train)
    ctx = StageContext(cfg, run_dir, progress or (lambda *a: None))
    ctx.stage = "parse"
    ctx.out.mkdir(parents=True, exist_ok=True)
    result = parse.run(ctx)
    assert sorted(result.files) == PARSE_FILES
    report = json.loads((run_dir / "parse" / "report.json").read_text())
    return read_jsonl(run_dir / "parse" / "chunks.jsonl", Chunk), report


def reasons(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """``{path: (kind, reason)}`` of the skipped files."""
    return {s["path"]: (s["kind"], s["reason"]) for s in report["skipped"]}
