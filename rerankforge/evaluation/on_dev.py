"""A scorer against the first stage on a build's held-out synthetic queries: reranked, fused, significance."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.artifacts import CandidateList, Chunk, Judgment, Query, read_json, read_jsonl
from rerankforge.evaluation.verdict import verdict
from rerankforge.fusion import choose_alpha, fuse
from rerankforge.ranking import mrr_at_k, ndcg_at_k, significant_gain

Scorer = Callable[[str, list[str]], Sequence[float]]


def compare_on_dev(
    run_dir: Path,
    scorer: Scorer,
    *,
    k: int,
    relevant_min: int,
    min_gain: float = 0.0,
    p_value: float | None = 0.05,
    alpha: float | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """First stage vs ``scorer``'s reranking vs their fusion, on the same candidates of a build's held-out queries.

    ``alpha`` is the fusion weight; ``None`` chooses it on these queries (see :mod:`rerankforge.fusion`).
    With ``p_value``, the reranker is called better, and a fusion weight above 0 is chosen, only when the
    gain over the first stage is significant (paired one-sided t-test over the queries).
    """
    chunks = {c.id: c for c in read_jsonl(run_dir / "parse" / "chunks.jsonl", Chunk)}
    queries = {q.id: q for q in read_jsonl(run_dir / "queries" / "queries.jsonl", Query)}
    candidates = {c.query_id: c for c in read_jsonl(run_dir / "mine" / "candidates.jsonl", CandidateList)}
    grades: dict[tuple[str, str], int] = {
        (j.query_id, j.chunk_id): j.grade for j in read_jsonl(run_dir / "grade" / "judgments.jsonl", Judgment)
    }
    dev_ids = read_json(run_dir / "train" / "split.json")["dev"]
    scored: list[tuple[list[int], list[float], list[float]]] = []
    for done, query_id in enumerate(dev_ids):
        if progress:
            progress(done, len(dev_ids), "reranking")
        ranked = candidates[query_id].candidates
        source = queries[query_id].chunk_id  # ungraded (grade.source off): the passage it was written from counts
        first_grades = [grades.get((query_id, c.chunk_id), relevant_min if c.chunk_id == source else 0) for c in ranked]
        scores = scorer(queries[query_id].text, [chunks[c.chunk_id].text for c in ranked])
        scored.append((first_grades, [float(x) for x in scores], [c.score for c in ranked]))
    if alpha is None:
        alpha, _ = choose_alpha(scored, lambda ranked_grades: ndcg_at_k(ranked_grades, k), p_value=p_value)

    def measure(ranked_grades: list[int]) -> dict[str, float]:
        return {"ndcg": ndcg_at_k(ranked_grades, k), "mrr": mrr_at_k(ranked_grades, k, relevant_min)}

    per_query: list[dict[str, Any]] = []
    for query_id, (first_grades, reranker, first_stage) in zip(dev_ids, scored, strict=True):
        systems = {
            "first_stage": range(len(first_grades)),
            "reranked": np.argsort(-np.asarray(reranker), kind="stable"),
            "fused": np.argsort(-fuse(reranker, first_stage, alpha), kind="stable"),
        }
        per_query.append(
            {
                "query_id": query_id,
                **{name: measure([first_grades[i] for i in order]) for name, order in systems.items()},
            }
        )

    def mean(system: str, metric: str) -> float:
        return round(sum(q[system][metric] for q in per_query) / max(len(per_query), 1), 4)

    metrics = {
        system: {f"ndcg@{k}": mean(system, "ndcg"), f"mrr@{k}": mean(system, "mrr")}
        for system in ("first_stage", "reranked", "fused")
    }
    gain = round(metrics["reranked"][f"ndcg@{k}"] - metrics["first_stage"][f"ndcg@{k}"], 4)
    fused_gain = round(metrics["fused"][f"ndcg@{k}"] - metrics["first_stage"][f"ndcg@{k}"], 4)
    n = len(per_query)
    first = [q["first_stage"]["ndcg"] for q in per_query]
    significant = p_value is None or significant_gain([q["reranked"]["ndcg"] for q in per_query], first, p_value)
    better = gain > min_gain and significant
    where = f"nDCG@{k} {gain:+.4f} on {n} held-out synthetic queries"
    said = verdict(
        gain,
        significant,
        min_gain=min_gain,
        baseline="the first stage",
        evidence=where if significant else f"{where}, paired t-test p >= {p_value}",
        unsure="too few or too noisy held-out queries to tell; build with more queries, and check on real labels "
        "with --eval-data",
        worse="keep the first stage's order, serve it fused with the first stage's scores, or build with more queries",
    )
    return {
        "dev_queries": n,
        "metrics": metrics,
        "gain_ndcg": gain,
        "better": better,
        "verdict": said,
        "fusion": {"alpha": alpha, "gain_ndcg": fused_gain},
        "per_query": per_query,
    }
