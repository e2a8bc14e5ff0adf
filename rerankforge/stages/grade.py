"""Stage 4: the LLM grades every (query, candidate) pair, the source chunk included, on a 0-3 scale.

From the grades come positives (grade >= positive_min_grade), hard negatives (grade <= negative_max_grade)
and graded levels. A first-stage candidate the LLM finds relevant is a positive, never a negative:
that is the false-negative control. Outputs: judgments, BEIR graded qrels, FlagEmbedding-style JSONL.
"""

from __future__ import annotations

from typing import Any

from rerankforge.artifacts import (
    CandidateList,
    Chunk,
    Judgment,
    Query,
    TrainingGroup,
    atomic_write_text,
    read_jsonl,
    write_jsonl,
)
from rerankforge.config import BuildConfig, GradeConfig
from rerankforge.errors import StageError
from rerankforge.pipeline import StageContext, StageResult
from rerankforge.stages import llm_cache_inputs
from rerankforge.templates import load_template

VERSION = "1"

GRADE_SCHEMA = {
    "type": "object",
    "properties": {"grade": {"type": "integer", "enum": [0, 1, 2, 3]}},
    "required": ["grade"],
    "additionalProperties": False,
}


def cache_inputs(cfg: BuildConfig) -> dict[str, Any]:
    return llm_cache_inputs(cfg, cfg.grade.template)


def parse_grade(value: Any) -> int:
    """``{"grade": 2}``, ``{"grade": "2"}`` or a bare ``2`` -> 2; anything outside 0-3 is invalid."""
    raw = value.get("grade") if isinstance(value, dict) else value
    if isinstance(raw, bool) or raw is None:
        raise ValueError(f"no grade in {value!r}")
    grade = float(raw)
    if not grade.is_integer() or not 0 <= grade <= 3:
        raise ValueError(f"grade {raw!r} is not one of 0, 1, 2, 3")
    return int(grade)


def group_by_query(judgments: list[Judgment]) -> dict[str, list[Judgment]]:
    """Judgments per query id, in their original order."""
    by_query: dict[str, list[Judgment]] = {}
    for judgment in judgments:
        by_query.setdefault(judgment.query_id, []).append(judgment)
    return by_query


def training_groups(
    queries: list[Query], chunks: dict[str, Chunk], judgments: list[Judgment], cfg: GradeConfig
) -> list[TrainingGroup]:
    """Positives and hard negatives per query; queries without both are left out."""
    by_query = group_by_query(judgments)
    groups = []
    for query in queries:
        graded = by_query.get(query.id, [])
        pos = sorted((j for j in graded if j.grade >= cfg.positive_min_grade), key=lambda j: -j.grade)
        neg = [j for j in graded if j.grade <= cfg.negative_max_grade]
        if not pos or not neg:
            continue
        groups.append(
            TrainingGroup(
                query_id=query.id,
                query=query.text,
                pos=[chunks[j.chunk_id].text for j in pos],
                neg=[chunks[j.chunk_id].text for j in neg],
                pos_ids=[j.chunk_id for j in pos],
                neg_ids=[j.chunk_id for j in neg],
                pos_scores=[float(j.grade) for j in pos],
                neg_scores=[float(j.grade) for j in neg],
            )
        )
    return groups


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.grade
    chunks = {c.id: c for c in read_jsonl(ctx.dir("parse") / "chunks.jsonl", Chunk)}
    queries = read_jsonl(ctx.dir("queries") / "queries.jsonl", Query)
    candidates = {c.query_id: c for c in read_jsonl(ctx.dir("mine") / "candidates.jsonl", CandidateList)}
    template = load_template(cfg.template)
    # Pairs of one chunk run back to back: their prompts share a prefix (instructions + passage) that the
    # LLM server keeps cached, so each further query of that chunk costs only its own few tokens.
    pairs = sorted(
        ((q, c.chunk_id) for q in queries for c in candidates[q.id].candidates),
        key=lambda pair: (pair[1], pair[0].id),
    )
    judgments: list[Judgment] = []
    failed = 0
    for done, (query, chunk_id) in enumerate(pairs):
        ctx.progress(done, len(pairs), query.text[:40])
        chunk = chunks[chunk_id]
        messages = template.render(query=query.text, passage=chunk.text, title=chunk.title, source=chunk.source)
        grade = ctx.llm.ask(
            messages,
            GRADE_SCHEMA,
            template_hash=template.sha256,
            max_tokens=cfg.max_tokens,
            validate=parse_grade,
            stage="grade",
        )
        if grade is None:
            failed += 1
            continue
        judgments.append(Judgment(query_id=query.id, chunk_id=chunk_id, grade=grade))
    ctx.progress(len(pairs), len(pairs))
    if not judgments:
        raise StageError(
            f"The LLM graded none of {len(pairs)} pairs usably. Use a stronger model (--llm-model) "
            "or check the grading template."
        )
    groups = training_groups(queries, chunks, judgments, cfg)
    judgments.sort(key=lambda j: (j.query_id, j.chunk_id))
    write_jsonl(ctx.out / "judgments.jsonl", judgments)
    write_jsonl(ctx.out / "train_flag.jsonl", groups)
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"{j.query_id}\t{j.chunk_id}\t{j.grade}\n" for j in judgments)
    atomic_write_text(ctx.out / "qrels.tsv", qrels)
    histogram = {str(g): sum(1 for j in judgments if j.grade == g) for g in range(4)}
    source_of = {q.id: q.chunk_id for q in queries}
    source_grades = [j.grade for j in judgments if source_of[j.query_id] == j.chunk_id]
    summary = {
        "pairs": len(pairs),
        "graded": len(judgments),
        "failed": failed,
        "grade_histogram": histogram,
        "source_chunk_mean_grade": round(sum(source_grades) / max(len(source_grades), 1), 2),
        "queries_with_positive_and_negative": len(groups),
    }
    return StageResult(files=["grade/judgments.jsonl", "grade/train_flag.jsonl", "grade/qrels.tsv"], summary=summary)
