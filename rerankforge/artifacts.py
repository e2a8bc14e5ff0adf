"""Typed records that flow between stages, and their JSONL storage.

Every artifact is written to a temp file and renamed into place, so a crash never leaves half a file.
LLM stages append records as they finish (see :class:`JsonlAppender`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from rerankforge.errors import StageError


class Chunk(BaseModel):
    """A passage cut from a document."""

    id: str
    text: str
    source: str = Field(description="Path of the file, relative to the docs folder.")
    title: str | None = None
    element_types: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    tokens: int | None = Field(None, description="Length in tokens of the reranker backbone's tokenizer.")


class SkippedFile(BaseModel):
    path: str
    reason: str
    kind: str = Field("error", description="Reason class: unsupported, empty, too_large, encrypted, ...")


class ParseReport(BaseModel):
    """What the parse stage did, for ``parse/report.json`` and the table the CLI prints."""

    files_seen: int
    files_parsed: int
    skipped: list[SkippedFile]
    chunks: int
    characters: int
    files_reused: int = Field(0, description="Unchanged files whose chunks came from the previous run.")
    skipped_by_reason: dict[str, int] = Field(default_factory=dict)
    ignored: dict[str, int] = Field(default_factory=dict, description="Hidden / excluded entries, not read.")
    tokens: int = 0
    max_tokens: int | None = None
    tokenizer: str | None = None
    chunks_over_token_limit: int = Field(
        0, description="Chunks that would have been truncated at max_tokens; each was split into smaller ones."
    )
    duplicates_removed: dict[str, int] = Field(default_factory=dict)
    changes: dict[str, int] = Field(default_factory=dict, description="Files added / changed / removed / unchanged.")


class Query(BaseModel):
    """A synthetic query written by the LLM for one chunk."""

    id: str
    text: str
    chunk_id: str
    style: str | None = Field(None, description="The style it was asked in: question, keyword or paraphrase.")


class Candidate(BaseModel):
    chunk_id: str
    score: float
    rank: int


class CandidateList(BaseModel):
    """First-stage candidates of one query, best first; the source chunk is always among them."""

    query_id: str
    candidates: list[Candidate]


class Judgment(BaseModel):
    """The LLM's grade of one (query, chunk) pair: 3 answers it exactly ... 0 unrelated."""

    query_id: str
    chunk_id: str
    grade: int = Field(ge=0, le=3)
    score: float | None = Field(
        None,
        ge=0,
        le=3,
        description="Expected grade from the LLM's token probabilities and/or the mean of several samples; "
        "None when only the written grade is known.",
    )

    @property
    def level(self) -> float:
        """The graded label training uses: ``score`` where known, else the grade."""
        return float(self.grade) if self.score is None else self.score


def grade_histogram(judgments: Iterable[Judgment]) -> dict[str, int]:
    """How many judgments gave each grade, 0 to 3 (as the card, the summaries and the report show it).

    Example:
        >>> grade_histogram([Judgment(query_id="q", chunk_id="c", grade=3)])
        {'0': 0, '1': 0, '2': 0, '3': 1}
    """
    counts = [0] * 4
    for judgment in judgments:
        counts[judgment.grade] += 1
    return {str(g): n for g, n in enumerate(counts)}


def group_by_query(judgments: list[Judgment]) -> dict[str, list[Judgment]]:
    """Judgments per query id, in their original order."""
    by_query: dict[str, list[Judgment]] = {}
    for judgment in judgments:
        by_query.setdefault(judgment.query_id, []).append(judgment)
    return by_query


class TrainingGroup(BaseModel):
    """FlagEmbedding-style training record, usable by other tools too."""

    query_id: str
    query: str
    pos: list[str]
    neg: list[str]
    pos_ids: list[str]
    neg_ids: list[str]
    pos_scores: list[float]
    neg_scores: list[float]


M = TypeVar("M", bound=BaseModel)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp path beside ``path`` for a library that writes the file itself; renamed to ``path`` on success.

    Example:
        >>> with atomic_path(Path("model.onnx")) as tmp:  # doctest: +SKIP
        ...     torch.onnx.export(module, args, str(tmp))
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise StageError(f"Artifact {path} is missing. Re-run the build with --force to recreate it.") from exc
    except json.JSONDecodeError as exc:
        raise StageError(f"Artifact {path} is corrupted ({exc}). Re-run the build with --force.") from exc


def write_jsonl(path: Path, records: Iterable[BaseModel | dict[str, Any]]) -> None:
    lines = []
    for record in records:
        data = record.model_dump(mode="json") if isinstance(record, BaseModel) else record
        lines.append(json.dumps(data, ensure_ascii=False))
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_jsonl(path: Path, model: type[M]) -> list[M]:
    return list(iter_jsonl(path, model))


def iter_jsonl(path: Path, model: type[M]) -> Iterator[M]:
    if not path.is_file():
        raise StageError(f"Artifact {path} is missing. Re-run the build with --force to recreate it.")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield model.model_validate_json(line)
            except ValueError as exc:
                raise StageError(
                    f"Artifact {path} line {number} is not a valid {model.__name__}: {exc}. "
                    "Re-run the build with --force."
                ) from exc


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
