"""Stage 4: the LLM grades (query, candidate) pairs, the source chunk included, on a 0-3 scale.

Which pairs: each query's source passage (``grade.source``; not by default) and its best ``grade.top_k`` other
candidates. With neither, nothing is graded and the
stage writes empty judgments: the first stage's tuning then takes each kept query's source as its positive.

From the grades come positives (grade >= positive_min_grade), hard negatives (grade <= negative_max_grade)
and graded levels. A first-stage candidate the LLM finds relevant is a positive, never a negative:
that is the false-negative control. Where the provider returns token log-probabilities, each judgment also
keeps the expected grade (a finer level than the written one); with ``samples`` > 1 the mean of several.
Outputs: judgments, BEIR graded qrels and folder, FlagEmbedding JSONL ``{query, pos, neg, pos_scores, neg_scores}``.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import mean
from typing import Any

from rerankforge.artifacts import (
    CandidateList,
    Chunk,
    Judgment,
    Query,
    TrainingGroup,
    atomic_write_text,
    grade_histogram,
    group_by_query,
    read_jsonl,
    write_jsonl,
)
from rerankforge.config import BuildConfig, GradeConfig
from rerankforge.errors import StageError
from rerankforge.stage import StageContext, StageResult
from rerankforge.stages import grades_source, llm_cache_inputs
from rerankforge.templates import load_template

VERSION = "4"  # 4: grade.source auto grades no source passage, a cross-encoder's build included
# 3: grade.source (auto: the source passages only for a cross-encoder); empty judgments allowed
# 2: expected grades from log-probabilities, samples, BEIR folder, pure FlagEmbedding JSONL

GRADE_SCHEMA = {
    "type": "object",
    "properties": {"grade": {"type": "integer", "enum": [0, 1, 2, 3]}},
    "required": ["grade"],
    "additionalProperties": False,
}


def cache_inputs(cfg: BuildConfig) -> dict[str, Any]:
    return {**llm_cache_inputs(cfg, cfg.grade.template), "grades_source": grades_source(cfg)}


def parse_grade(value: Any) -> int:
    """``{"grade": 2}``, ``{"grade": "2"}`` or a bare ``2`` -> 2; anything outside 0-3 is invalid."""
    raw = value.get("grade") if isinstance(value, dict) else value
    if isinstance(raw, bool) or raw is None:
        raise ValueError(f"no grade in {value!r}")
    grade = float(raw)
    if not grade.is_integer() or not 0 <= grade <= 3:
        raise ValueError(f"grade {raw!r} is not one of 0, 1, 2, 3")
    return int(grade)


TOP_LOGPROBS = 10  # alternatives per token: enough to hold all four grade digits


def expected_grade(logprobs: list[dict[str, Any]] | None) -> float | None:
    """Sum of grade x probability at the token where the model wrote its grade, renormalised over 0-3.

    ``None`` when there are no log-probabilities or no grade digit among the generated tokens.

    Example:
        >>> import math
        >>> tokens = [{"token": '{"grade": ', "top": {}}, {"token": "2", "top": {"2": math.log(0.6), "3": math.log(0.2),
        ...           "1": math.log(0.2), "a": math.log(0.5)}}]
        >>> expected_grade(tokens)
        2.0
    """
    for position in logprobs or []:
        if position["token"].strip() not in ("0", "1", "2", "3"):
            continue
        probability = dict.fromkeys(range(4), 0.0)
        for token, logprob in position["top"].items():
            if token.strip() in ("0", "1", "2", "3"):
                probability[int(token.strip())] += math.exp(logprob)
        total = sum(probability.values())
        return sum(g * p for g, p in probability.items()) / total
    return None


def training_groups(
    queries: list[Query], chunks: dict[str, Chunk], judgments: list[Judgment], cfg: GradeConfig
) -> list[TrainingGroup]:
    """Positives and hard negatives per query; queries without both are left out."""
    by_query = group_by_query(judgments)
    groups = []
    for query in queries:
        graded = by_query.get(query.id, [])
        pos = sorted((j for j in graded if j.grade >= cfg.positive_min_grade), key=lambda j: -j.level)
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
                pos_scores=[j.level for j in pos],
                neg_scores=[j.level for j in neg],
            )
        )
    return groups


def graded_candidates(query: Query, candidates: CandidateList, top_k: int | None, source: bool = True) -> list[str]:
    """The chunks of one query the LLM grades: its source (with ``source``) and its best ``top_k`` other
    candidates (all when None), best first. The ungraded rest are negatives only the first stage's tuning uses."""
    ids = [c.chunk_id for c in candidates.candidates]
    others = [i for i in ids if i != query.chunk_id][:top_k]
    return [i for i in ids if (source and i == query.chunk_id) or i in others]


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.grade
    chunks = {c.id: c for c in read_jsonl(ctx.dir("parse") / "chunks.jsonl", Chunk)}
    queries = read_jsonl(ctx.dir("queries") / "queries.jsonl", Query)
    candidates = {c.query_id: c for c in read_jsonl(ctx.dir("mine") / "candidates.jsonl", CandidateList)}
    template = load_template(cfg.template)
    # Pairs of one chunk run back to back: their prompts share a prefix (instructions + passage) that the
    # LLM server keeps cached, so each further query of that chunk costs only its own few tokens.
    source = grades_source(ctx.config)
    pairs = sorted(
        ((q, chunk_id) for q in queries for chunk_id in graded_candidates(q, candidates[q.id], cfg.top_k, source)),
        key=lambda pair: (pair[1], pair[0].id),
    )
    logprobs = cfg.logprobs and getattr(ctx.llm.provider, "supports_logprobs", False)

    def judge(pair: tuple[Query, str]) -> Judgment | None:
        query, chunk_id = pair
        chunk = chunks[chunk_id]
        messages = template.render(query=query.text, passage=chunk.text, title=chunk.title, source=chunk.source)
        grades, scores = [], []
        for sample in range(cfg.samples):
            request: dict[str, Any] = {"top_logprobs": TOP_LOGPROBS} if logprobs else {}
            if sample:  # the first sample is the plain call; the others vary seed and temperature
                llm_cfg = ctx.config.llm
                request.update(seed=llm_cfg.seed + sample, temperature=cfg.sample_temperature)
            answer = ctx.llm.ask_answer(
                messages,
                GRADE_SCHEMA,
                template_hash=template.sha256,
                max_tokens=cfg.max_tokens,
                validate=parse_grade,
                stage="grade",
                request=request,
            )
            if answer is not None:
                grades.append(answer.value)
                scores.append(expected_grade(answer.logprobs))
        if not grades:
            return None
        known = [s for s in scores if s is not None]
        score = mean(known) if known else (mean(grades) if len(grades) > 1 else None)
        grade = round(mean(grades) + 1e-9)  # halves round up: 1.5 -> 2
        return Judgment(query_id=query.id, chunk_id=chunk_id, grade=grade, score=score)

    from rerankforge.llm.hosts import map_ordered

    judgments: list[Judgment] = []
    failed = 0
    for done, judgment in enumerate(map_ordered(judge, pairs, ctx.llm.concurrency)):
        ctx.progress(done + 1, len(pairs), pairs[done][0].text[:40])
        if judgment is None:
            failed += 1
        else:
            judgments.append(judgment)
    ctx.progress(len(pairs), len(pairs))
    if pairs and not judgments:
        raise StageError(
            f"The LLM graded none of {len(pairs)} pairs usably. Use a stronger model (--llm-model) "
            "or check the grading template."
        )
    groups = training_groups(queries, chunks, judgments, cfg)
    judgments.sort(key=lambda j: (j.query_id, j.chunk_id))
    write_jsonl(ctx.out / "judgments.jsonl", judgments)
    write_jsonl(ctx.out / "train_flag.jsonl", (g.model_dump(include=set(FLAG_KEYS)) for g in groups))
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"{j.query_id}\t{j.chunk_id}\t{j.grade}\n" for j in judgments)
    atomic_write_text(ctx.out / "qrels.tsv", qrels)
    beir = write_beir(ctx.out / "beir", chunks, queries, qrels)
    histogram = grade_histogram(judgments)
    source_of = {q.id: q.chunk_id for q in queries}
    source_grades = [j.grade for j in judgments if source_of[j.query_id] == j.chunk_id]
    summary = {
        "source_graded": source,
        "pairs": len(pairs),
        "graded": len(judgments),
        "failed": failed,
        "grade_histogram": histogram,
        "source_chunk_mean_grade": round(sum(source_grades) / len(source_grades), 2) if source_grades else None,
        "queries_with_positive_and_negative": len(groups),
        "graded_with_probabilities": sum(1 for j in judgments if j.score is not None),
    }
    files = ["grade/judgments.jsonl", "grade/train_flag.jsonl", "grade/qrels.tsv"]
    return StageResult(files=files + [f"grade/beir/{name}" for name in beir], summary=summary)


FLAG_KEYS = ("query", "pos", "neg", "pos_scores", "neg_scores")  # FlagEmbedding's reranker training format


def write_beir(folder: Path, chunks: dict[str, Chunk], queries: list[Query], qrels: str) -> list[str]:
    """The BEIR layout other evaluators read: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/train.tsv``."""
    corpus = ({"_id": c.id, "title": c.title or "", "text": c.text} for c in chunks.values())
    write_jsonl(folder / "corpus.jsonl", corpus)
    write_jsonl(folder / "queries.jsonl", ({"_id": q.id, "text": q.text} for q in queries))
    atomic_write_text(folder / "qrels" / "train.tsv", qrels)
    return ["corpus.jsonl", "queries.jsonl", "qrels/train.tsv"]
