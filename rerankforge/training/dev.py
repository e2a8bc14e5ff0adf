"""The held-out synthetic queries as a ranking task, and the evaluator that picks the best checkpoint.

Each dev query's first-stage candidates carry the LLM's grades; the evaluator reranks them with the model
being trained and reports nDCG@k with graded gains, next to the first stage's own nDCG@k on the same lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.artifacts import CandidateList, Chunk, Judgment, Query, read_jsonl
from rerankforge.ranking import ndcg_at_k, ndcg_of_scores


@dataclass(frozen=True)
class DevQuery:
    query: str
    docs: list[str]
    grades: list[int]  # in first-stage order


def dev_queries(
    run_dir: Path, query_ids: list[str], chunks: dict[str, Chunk], queries: list[Query], judgments: list[Judgment]
) -> list[DevQuery]:
    """The graded candidate lists of ``query_ids``, in first-stage order (ungraded candidates count as 0)."""
    texts = {q.id: q.text for q in queries}
    lists = {c.query_id: c.candidates for c in read_jsonl(run_dir / "mine" / "candidates.jsonl", CandidateList)}
    grades = {(j.query_id, j.chunk_id): j.grade for j in judgments}
    return [
        DevQuery(
            query=texts[qid],
            docs=[chunks[c.chunk_id].text for c in lists[qid]],
            grades=[grades.get((qid, c.chunk_id), 0) for c in lists[qid]],
        )
        for qid in query_ids
        if qid in lists
    ]


def rerank_ndcg(dev: list[DevQuery], scores: list[np.ndarray], k: int) -> float:
    """Mean nDCG@k of the dev queries ranked by ``scores`` (one array per query)."""
    values = [ndcg_of_scores(q.grades, s, k) for q, s in zip(dev, scores, strict=True)]
    return float(np.mean(values)) if values else 0.0


def first_stage_ndcg(dev: list[DevQuery], k: int) -> float:
    return float(np.mean([ndcg_at_k(q.grades, k) for q in dev])) if dev else 0.0


def dev_evaluator(dev: list[DevQuery], k: int = 10, batch_size: int = 32) -> Any:
    """A sentence-transformers evaluator: ``dev_ndcg@k`` of the model's reranking (the trainer's metric for
    choosing the best checkpoint) and ``dev_first_stage_ndcg@k`` for comparison."""
    from sentence_transformers.base.evaluation import SentenceEvaluator

    baseline = first_stage_ndcg(dev, k)

    class DevNDCGEvaluator(SentenceEvaluator):
        def __init__(self) -> None:
            super().__init__()
            self.name = "dev"
            self.primary_metric = f"ndcg@{k}"
            self.greater_is_better = True

        def __call__(self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict:
            pairs = [(q.query, d) for q in dev for d in q.docs]
            flat = np.asarray(
                model.predict(pairs, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True),
                dtype=np.float64,
            ).reshape(-1)
            scores, start = [], 0
            for q in dev:
                scores.append(flat[start : start + len(q.docs)])
                start += len(q.docs)
            metrics = {f"ndcg@{k}": rerank_ndcg(dev, scores, k), f"first_stage_ndcg@{k}": baseline}
            metrics = self.prefix_name_to_metrics(metrics, self.name)
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            return metrics

    return DevNDCGEvaluator()
