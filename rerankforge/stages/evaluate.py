"""Stage 6: nDCG@10 and MRR@10 on the held-out synthetic queries, first stage alone vs reranked.

Relevance comes from the LLM's grades of each dev query's candidates; both systems rank the same
candidate list, so the comparison isolates what the reranker adds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.artifacts import CandidateList, Chunk, Judgment, Query, read_json, read_jsonl, write_json
from rerankforge.fusion import choose_alpha, fuse, significant_gain
from rerankforge.pipeline import StageContext, StageResult

VERSION = "4"  # 4: the served scorer (first stage, tuned first stage, cross-encoder residual) is chosen here
# 3: "better" and a fusion weight above 0 need a significant gain


def ndcg_at_k(ranked_grades: Sequence[float], k: int) -> float:
    """nDCG@k with linear gains, for grades in ranked order (the ideal is the same grades sorted).

    Example:
        >>> round(ndcg_at_k([0, 3, 1], k=10), 4)
        0.659
    """

    def dcg(grades: Sequence[float]) -> float:
        return sum(g / math.log2(i + 2) for i, g in enumerate(grades[:k]))

    ideal = dcg(sorted(ranked_grades, reverse=True))
    return dcg(ranked_grades) / ideal if ideal > 0 else 0.0


def mrr_at_k(ranked_grades: Sequence[float], k: int, relevant_min: float) -> float:
    """Reciprocal rank of the first relevant item within the top k, else 0.

    Example:
        >>> mrr_at_k([0, 1, 3], k=10, relevant_min=2)
        0.3333333333333333
    """
    for i, grade in enumerate(ranked_grades[:k]):
        if grade >= relevant_min:
            return 1.0 / (i + 1)
    return 0.0


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
        first_grades = [grades.get((query_id, c.chunk_id), 0) for c in ranked]
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
    if better:
        verdict = f"better than the first stage ({where})"
    elif gain > min_gain:
        verdict = (
            f"NOT significantly better than the first stage ({where}, paired t-test p >= {p_value}): too few or "
            "too noisy held-out queries to tell; build with more queries, and check on real labels with --eval-data"
        )
    else:
        verdict = (
            f"NOT better than the first stage ({where}): keep the first stage's order, serve it fused with the "
            "first stage's scores, or build with more queries"
        )
    return {
        "dev_queries": n,
        "metrics": metrics,
        "gain_ndcg": gain,
        "better": better,
        "verdict": verdict,
        "fusion": {"alpha": alpha, "gain_ndcg": fused_gain},
        "per_query": per_query,
    }


def dev_lists(ctx: StageContext, cross_encoder: Any) -> list[Any]:
    """The held-out queries' top candidates from the build's first-stage index, with every part's scores."""
    import torch

    from rerankforge.evaluation.scorer_choice import DevList
    from rerankforge.index.qdrant import QdrantIndex
    from rerankforge.stages.mine import embed, load_bi_encoder
    from rerankforge.stages.train import TUNED_FIRST_STAGE

    chunks = {c.id: c for c in read_jsonl(ctx.run_dir / "parse" / "chunks.jsonl", Chunk)}
    queries = {q.id: q for q in read_jsonl(ctx.run_dir / "queries" / "queries.jsonl", Query)}
    dev = [queries[i] for i in read_json(ctx.run_dir / "train" / "split.json")["dev"]]
    mine = ctx.config.mine
    first = load_bi_encoder(mine.bi_encoder)
    vectors = embed(first.encode_query, [q.text for q in dev], mine.batch_size)
    index = QdrantIndex(path=None if mine.qdrant_url else ctx.dir("mine") / "qdrant", url=mine.qdrant_url,
                        collection=mine.collection)  # fmt: skip
    try:
        hits = index.search(vectors, k=min(ctx.config.evaluate.dev_top_k, len(chunks)))
    finally:
        index.close()
    tuned_dir = ctx.dir("train") / TUNED_FIRST_STAGE
    tuned = None
    if (tuned_dir / "modules.json").is_file():
        from sentence_transformers import SentenceTransformer

        tuned = SentenceTransformer(str(tuned_dir), device=first.device)
    lists = []
    for done, (query, query_hits) in enumerate(zip(dev, hits, strict=True)):
        ctx.progress(done, len(dev), "scoring held-out queries")
        docs = [chunks[cid].text for cid, _ in query_hits]
        tuned_cos = None
        if tuned is not None:
            q_vec = embed(tuned.encode_query, [query.text], mine.batch_size)[0]
            tuned_cos = embed(tuned.encode_document, docs, mine.batch_size) @ q_vec
        logits = cross_encoder.predict(
            [(query.text, d) for d in docs], activation_fn=torch.nn.Identity(), show_progress_bar=False
        )
        lists.append(
            DevList(
                grades=[int(cid == query.chunk_id) for cid, _ in query_hits],
                first=np.array([score for _, score in query_hits], dtype=np.float64),
                tuned=None if tuned_cos is None else np.asarray(tuned_cos, dtype=np.float64),
                cross_encoder=np.asarray(logits, dtype=np.float64).reshape(-1),
            )
        )
    return lists


def scorer_verdict(choice: dict[str, Any], n: int, k: int) -> str:
    """The verdict on the served scorer, worded to follow the CLI's "The reranker is"."""
    systems = choice["systems"]
    where = f"on {n} held-out synthetic queries, each judged by its own source passage"
    if choice["learned"]:
        scorer = choice["scorer"]
        parts = "the tuned first stage" if scorer["first_stage"] == "tuned" else "the first stage"
        if scorer["cross_encoder_weight"]:
            parts += f" plus the cross-encoder (weight {scorer['cross_encoder_weight']:.3g})"
        return (
            f"better than the first stage: it serves {parts}, nDCG@{k} {choice['gain_ndcg']:+.4f} "
            f"({systems['first stage']:.4f} first stage) {where}, paired t-test p = {choice['p_value']:.3g}"
        )
    learned = {name: value for name, value in systems.items() if name != "first stage"}
    best = max(learned, key=lambda name: learned[name]) if learned else None
    tried = f"; best of the rest: {best} {learned[best]:.4f}" if best else ""
    return (
        f"NOT better than the untuned first stage (nDCG@{k} {systems['first stage']:.4f} {where}{tried}, not a "
        "significant gain): the model serves the first stage's own order. Build with more queries or a stronger LLM"
    )


def run(ctx: StageContext) -> StageResult:
    from rerankforge.evaluation.scorer_choice import choose_scorer
    from rerankforge.stages.train import load_cross_encoder

    cfg = ctx.config.evaluate
    model = load_cross_encoder(str(ctx.run_dir / "model"), ctx.config.train.max_length)

    def scorer(query: str, docs: list[str]) -> Sequence[float]:
        return model.predict([(query, d) for d in docs], show_progress_bar=False)

    result = compare_on_dev(
        ctx.run_dir,
        scorer,
        k=cfg.k,
        relevant_min=ctx.config.grade.positive_min_grade,
        min_gain=cfg.min_gain,
        p_value=cfg.dev_p_value,
        progress=ctx.progress,
    )
    per_query = result.pop("per_query")
    lists = dev_lists(ctx, model)
    choice = choose_scorer(lists, k=cfg.k, p_value=cfg.dev_p_value)
    # the cross-encoder alone, judged by the LLM's grades (the figures of earlier builds), kept for comparison
    result["cross_encoder"] = {key: result.pop(key) for key in ("gain_ndcg", "better", "verdict")}
    result["fusion"]["cross_encoder_alpha"] = result["fusion"]["alpha"]
    result["fusion"]["alpha"] = choice["fusion_alpha"]
    result.update(
        gain_ndcg=choice["gain_ndcg"],
        better=choice["learned"],
        verdict=scorer_verdict(choice, len(lists), cfg.k),
        scorer=choice["scorer"],
        scorer_choice={"dev_queries": len(lists), "top_k": cfg.dev_top_k, **choice},
    )
    write_json(ctx.out / "metrics.json", result)
    write_json(ctx.out / "per_query.json", per_query)
    summary = {
        "fusion": result["fusion"],
        "dev_queries": result["dev_queries"],
        **result["metrics"],
        "gain_ndcg": result["gain_ndcg"],
        "better": result["better"],
        "verdict": result["verdict"],
        "scorer": result["scorer"],
        "scorer_ndcg": choice["systems"],
    }
    return StageResult(files=["evaluate/metrics.json", "evaluate/per_query.json"], summary=summary)
