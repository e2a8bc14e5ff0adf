"""Evaluate rerankers on labelled queries: BM25 and dense first stages, the reranker on the first stage's
top-k, optional comparison rerankers, ranx metrics, a paired t-test and per-query wins and losses.

Example:
    >>> from rerankforge.config import EvaluateConfig
    >>> from rerankforge.evaluation.labels import load_labels
    >>> data = load_labels("labels.csv", corpus=my_chunks)  # doctest: +SKIP
    >>> scorers = [load_scorer("run/model")]  # doctest: +SKIP
    >>> result = evaluate_labelled(data, scorers, EvaluateConfig(), bi_encoder="all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> result["verdict"]  # doctest: +SKIP
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.artifacts import write_json
from rerankforge.config import EvaluateConfig
from rerankforge.evaluation.first_stage import Run, bm25_search, dense_search
from rerankforge.evaluation.labels import LabelledData
from rerankforge.evaluation.metrics import metric_names, score_runs
from rerankforge.evaluation.scorers import Scorer
from rerankforge.evaluation.verdict import verdict
from rerankforge.fusion import fuse

LABELLED_RESULT = "eval/labelled.json"
Progress = Callable[[int, int, str], None]


def _no_progress(done: int, total: int, note: str) -> None:
    return None


def sample_queries(data: LabelledData, max_queries: int | None, seed: int) -> list[str]:
    """Every query id, or a seeded sample of ``max_queries`` of them (sorted, so runs are reproducible)."""
    ids = sorted(data.qrels)
    if max_queries is None or len(ids) <= max_queries:
        return ids
    return sorted(random.Random(seed).sample(ids, max_queries))


def rerank_run(
    first_stage: Run,
    queries: dict[str, str],
    corpus: dict[str, str],
    scorer: Scorer,
    top_k: int,
    progress: Progress = _no_progress,
) -> tuple[Run, Run | None]:
    """The scorer's order of each query's first-stage top-``top_k``; and their fusion when the model has a weight."""
    reranked: Run = {}
    fused: Run | None = {} if scorer.fusion_alpha is not None else None
    for done, (query_id, hits) in enumerate(first_stage.items()):
        progress(done, len(first_stage), f"reranking with {Path(scorer.name).name}")
        top = sorted(hits.items(), key=lambda item: -item[1])[:top_k]
        if not top:
            reranked[query_id] = {}
            continue
        doc_ids = [d for d, _ in top]
        scores = np.asarray(scorer.score(queries[query_id], [corpus[d] for d in doc_ids]), dtype=np.float64)
        reranked[query_id] = dict(zip(doc_ids, scores.tolist(), strict=True))
        if fused is not None and scorer.fusion_alpha is not None:
            mixed = fuse(scores, [s for _, s in top], scorer.fusion_alpha)
            fused[query_id] = dict(zip(doc_ids, mixed.tolist(), strict=True))
    progress(len(first_stage), len(first_stage), "reranked")
    return reranked, fused


def evaluate_labelled(
    data: LabelledData,
    scorers: list[Scorer],
    cfg: EvaluateConfig,
    *,
    bi_encoder: str,
    seed: int = 13,
    progress: Progress = _no_progress,
) -> dict[str, Any]:
    """BM25 and dense first stages, ``scorers[0]`` (your model) and any comparison rerankers, on labelled data.

    Every reranker reorders the same candidates: the top ``cfg.rerank_top_k`` of ``cfg.first_stage``. The
    verdict compares your model with that first stage on nDCG@k with a paired t-test over the queries.
    """
    if not scorers:
        raise ValueError("evaluate_labelled needs at least one scorer (your model)")
    query_ids = sample_queries(data, cfg.max_queries, seed)
    queries = {q: data.queries[q] for q in query_ids}
    qrels = {q: data.qrels[q] for q in query_ids}
    depth = max(cfg.rerank_top_k, cfg.k)
    progress(0, 3, "BM25 first stage")
    runs: dict[str, Run] = {"bm25": bm25_search(data.corpus, queries, depth)}
    progress(1, 3, "dense first stage")
    runs["dense"] = dense_search(data.corpus, queries, depth, bi_encoder)
    labels = {"bm25": "BM25 (bm25s)", "dense": f"dense ({Path(bi_encoder).name})"}
    base = cfg.first_stage
    where = f"top-{cfg.rerank_top_k} of {base}"
    for position, scorer in enumerate(scorers):
        name = "reranked" if position == 0 else f"compare {position}"
        reranked, fused = rerank_run(runs[base], queries, data.corpus, scorer, cfg.rerank_top_k, progress)
        runs[name] = reranked
        labels[name] = f"{'your model' if position == 0 else Path(scorer.name).name} ({scorer.kind}, {where})"
        if position == 0 and fused is not None:
            runs["fused"] = fused
            labels["fused"] = f"your model fused with {base} (alpha {scorer.fusion_alpha})"
    metrics = list(dict.fromkeys(metric_names(cfg.k, (cfg.k, cfg.rerank_top_k))))
    scores = score_runs(qrels, runs, metrics, baseline=base)
    main = f"ndcg@{cfg.k}"
    gain = round(scores.means["reranked"][main] - scores.means[base][main], 4)
    p_value = scores.p_values["reranked"][main]
    better = gain > cfg.min_gain and p_value < cfg.p_value
    wtl = scores.win_tie_loss["reranked"][main]
    n = len(query_ids)
    evidence = f"nDCG@{cfg.k} {gain:+.4f}, paired t-test p = {p_value:.3g}, {wtl['W']} wins / {wtl['L']} losses"
    same_order = wtl["W"] == 0 and wtl["L"] == 0
    said = verdict(
        gain,
        p_value < cfg.p_value,
        min_gain=cfg.min_gain,
        baseline=f"the {base} first stage on {n} labelled queries",
        evidence=evidence,
        unsure="the gain may be chance; label more queries before trusting it",
        worse="it ranks every one of them as the first stage does, so it is no worse either. When the build learned "
        "nothing that beats its first stage, the model serves that first stage's own order; build with more queries "
        "or a stronger LLM"
        if same_order
        else "keep the first stage's order, and build with more queries or a stronger LLM",
    )
    per_query = [
        {"query_id": q, "query": queries[q], **{name: round(scores.per_query[name][main][q], 4) for name in runs}}
        for q in query_ids
    ]
    return {
        "data": {**data.card(), "queries_evaluated": n, "queries_labelled": len(data.qrels)},
        "k": cfg.k,
        "first_stage": base,
        "rerank_top_k": cfg.rerank_top_k,
        "main_metric": main,
        "systems": labels,
        "metrics": scores.means,
        "p_values": scores.p_values,
        "win_tie_loss": scores.win_tie_loss,
        "gain_ndcg": gain,
        "p_value": p_value,
        "better": better,
        "verdict": said,
        "per_query": per_query,
    }


def save_labelled_result(run_dir: Path, result: dict[str, Any]) -> Path:
    path = run_dir / LABELLED_RESULT
    write_json(path, result)
    return path


@dataclass
class LabelledEvalSpec:
    """What to evaluate on which labels (see :func:`run_labelled_evaluation`)."""

    data: Path
    model: str
    evaluate: EvaluateConfig
    bi_encoder: str
    run_dir: Path | None = None
    corpus: Path | None = None
    compare: list[str] = field(default_factory=list)
    onnx: bool | None = None
    int8: bool | None = None
    max_length: int = 512
    seed: int = 13


def run_labelled_evaluation(spec: LabelledEvalSpec, progress: Progress = _no_progress) -> dict[str, Any]:
    """Load the labels (CSV/JSONL labels point into ``spec.corpus``, else the run's chunks), load the model and
    the comparison rerankers, evaluate, and save the result in the run folder when there is one."""
    from rerankforge.artifacts import Chunk, read_jsonl
    from rerankforge.evaluation.labels import load_corpus, load_labels
    from rerankforge.evaluation.scorers import load_scorer

    corpus = None
    if spec.corpus is not None:
        corpus = load_corpus(spec.corpus)
    elif not Path(spec.data).is_dir() and spec.run_dir is not None:
        corpus = {c.id: c.text for c in read_jsonl(spec.run_dir / "parse" / "chunks.jsonl", Chunk)}
    data = load_labels(spec.data, corpus, match_threshold=spec.evaluate.match_threshold)
    scorers = [load_scorer(spec.model, onnx=spec.onnx, int8=spec.int8, max_length=spec.max_length)]
    scorers += [load_scorer(other, max_length=spec.max_length) for other in spec.compare]
    result = evaluate_labelled(
        data, scorers, spec.evaluate, bi_encoder=spec.bi_encoder, seed=spec.seed, progress=progress
    )
    if spec.run_dir is not None:
        save_labelled_result(spec.run_dir, result)
    return result
