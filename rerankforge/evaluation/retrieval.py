"""The build's first stage as a retriever: its top documents of each query over the whole corpus, tuned against
untuned (nDCG@k and Recall@20/50/100, paired two-sided t-test, wins and losses), on the build's held-out synthetic
queries or on the user's labels. What a user measures before swapping the embedder of their own retriever.

Example:
    >>> result = evaluate_retrieval(run_dir, data=None)  # doctest: +SKIP
    >>> result["synthetic"]["means"]["tuned"]["recall@100"]  # doctest: +SKIP
    0.93
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.artifacts import Chunk, Judgment, Query, read_json, read_jsonl, write_json
from rerankforge.errors import InputError
from rerankforge.evaluation.labels import LabelledData
from rerankforge.evaluation.metrics import Run, score_runs

RETRIEVAL_RESULT = "eval/retrieval.json"
RECALL_AT = (20, 50, 100)
Progress = Callable[[int, int, str], None]


def _no_progress(done: int, total: int, note: str) -> None:
    return None


def search(doc_vectors: np.ndarray, doc_ids: list[str], query_vectors: np.ndarray, k: int) -> list[dict[str, float]]:
    """Exact cosine top-``k`` of each query (unit vectors: a dot product), best first.

    Example:
        >>> docs = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
        >>> [list(hits) for hits in search(docs, ["a", "b", "c"], np.array([[0.0, 1.0]]), k=2)]
        [['b', 'c']]
    """
    k = min(k, len(doc_ids))
    out = []
    for start in range(0, len(query_vectors), 256):  # a block of queries at a time: bounded memory
        scores = query_vectors[start : start + 256] @ doc_vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        for row, idx in zip(scores, top, strict=True):
            best = idx[np.argsort(-row[idx], kind="stable")]
            out.append({doc_ids[i]: float(row[i]) for i in best})
    return out


def retrieval_table(
    corpus: dict[str, str],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    embedders: dict[str, Any],
    *,
    k: int,
    baseline: str,
    progress: Progress = _no_progress,
) -> dict[str, Any]:
    """Each embedder (an :class:`~rerankforge.serve.embedder.OnnxEmbedder`, or anything with its ``embed``) as a
    retriever over ``corpus``: nDCG@``k`` and Recall@20/50/100 of its top 100, each compared with ``baseline``."""
    doc_ids, query_ids = list(corpus), [q for q in queries if q in qrels]
    depth = max(k, *RECALL_AT)
    runs: dict[str, Run] = {}
    for done, (name, embedder) in enumerate(embedders.items()):
        progress(done, len(embedders), f"embedding the corpus with the {name} first stage")
        doc_vectors = embedder.embed([corpus[d] for d in doc_ids], "document")
        query_vectors = embedder.embed([queries[q] for q in query_ids], "query")
        runs[name] = dict(zip(query_ids, search(doc_vectors, doc_ids, query_vectors, depth), strict=True))
    progress(len(embedders), len(embedders), "")
    metrics = [f"ndcg@{k}", *(f"recall@{r}" for r in RECALL_AT)]
    scores = score_runs({q: qrels[q] for q in query_ids}, runs, metrics, baseline=baseline)
    return {"queries": len(query_ids), "documents": len(doc_ids), "baseline": baseline, **scores.as_dict()}


def synthetic_qrels(run_dir: Path, positive_min_grade: int) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """The build's held-out queries and what is relevant to each: its source passage (unless the grader rejected
    it) and every candidate graded ``positive_min_grade`` or above."""
    from rerankforge.training.bi_encoder import rejected_queries

    queries = {q.id: q for q in read_jsonl(run_dir / "queries" / "queries.jsonl", Query)}
    judgments = read_jsonl(run_dir / "grade" / "judgments.jsonl", Judgment)
    rejected = rejected_queries(list(queries.values()), judgments, positive_min_grade)
    dev = [q for q in read_json(run_dir / "train" / "split.json")["dev"] if q in queries and q not in rejected]
    qrels = {q: {queries[q].chunk_id: positive_min_grade} for q in dev}
    for j in judgments:
        if j.query_id in qrels and j.grade >= positive_min_grade:
            qrels[j.query_id][j.chunk_id] = j.grade
    return {q: queries[q].text for q in dev}, qrels


def first_stages(run_dir: Path, threads: int) -> tuple[dict[str, Any], str]:
    """The build's untuned and tuned first stages as ONNX embedders, and what the tuned one is (a tuned first stage
    the build did not serve is exported once into ``eval/tuned_first_stage``)."""
    from rerankforge.index.first_stage_export import export_first_stage, untuned_export
    from rerankforge.serve.embedder import EMBEDDER_FILE, OnnxEmbedder
    from rerankforge.training.bi_encoder import TUNED_FIRST_STAGE

    cfg = read_json(run_dir / "config.json")
    untuned, _ = untuned_export(cfg["mine"]["bi_encoder"])
    tuned_weights = run_dir / "train" / TUNED_FIRST_STAGE
    if not (tuned_weights / "config.json").is_file() and not (tuned_weights / "modules.json").is_file():
        raise InputError(
            f"{run_dir} has no tuned first stage (train/{TUNED_FIRST_STAGE}): its build tuned none, so there is "
            "nothing to compare with the untuned one. Build with train.first_stage on."
        )
    served = read_json(run_dir / "model" / "rerankforge.json").get("scorer", {}) if (
        run_dir / "model" / "rerankforge.json").is_file() else {}  # fmt: skip
    if served.get("first_stage_tuned"):
        tuned, note = run_dir / "model" / served.get("first_stage", "first_stage"), "served by the model folder"
    else:
        tuned, note = run_dir / "eval" / "tuned_first_stage", "tuned by the build, not served (its floor said no)"
        stamp = tuned / "weights.sha"
        from rerankforge.artifacts import file_sha256

        weights = sorted(tuned_weights.glob("*.safetensors"))
        digest = "".join(file_sha256(w) for w in weights)
        if not (tuned / EMBEDDER_FILE).is_file() or not stamp.is_file() or stamp.read_text() != digest:
            from sentence_transformers import SentenceTransformer

            export_first_stage(SentenceTransformer(str(tuned_weights), device="cpu"), tuned)
            stamp.write_text(digest, encoding="utf-8")
    embedders = {
        "untuned": OnnxEmbedder(untuned, threads=threads, batch_size=32),
        "tuned": OnnxEmbedder(tuned, threads=threads, batch_size=32),
    }
    return embedders, note


def evaluate_retrieval(
    run_dir: Path, data: LabelledData | None = None, *, k: int | None = None, progress: Progress = _no_progress
) -> dict[str, Any]:
    """The tuned first stage against the untuned one as retrievers over the whole corpus: on the build's
    held-out synthetic queries (corpus: its chunks), and on ``data`` (the user's labels and their corpus) when
    given. Saved to ``RUN_DIR/eval/retrieval.json``."""
    from rerankforge.serve.runtime import usable_cores

    if not (run_dir / "train" / "split.json").is_file():
        raise InputError(f"{run_dir} is not the run folder of a finished build (no train/split.json).")
    cfg = read_json(run_dir / "config.json")
    k = k or int(cfg["evaluate"]["k"])
    embedders, tuned_note = first_stages(run_dir, usable_cores())
    chunks = {c.id: c.text for c in read_jsonl(run_dir / "parse" / "chunks.jsonl", Chunk)}
    queries, qrels = synthetic_qrels(run_dir, int(cfg["grade"]["positive_min_grade"]))
    result: dict[str, Any] = {"k": k, "tuned": tuned_note}
    result["synthetic"] = retrieval_table(chunks, queries, qrels, embedders, k=k, baseline="untuned", progress=progress)
    if data is not None:
        result["labelled"] = retrieval_table(
            data.corpus, data.queries, data.qrels, embedders, k=k, baseline="untuned", progress=progress
        )
        result["labelled"]["source"] = data.source
    write_json(run_dir / RETRIEVAL_RESULT, result)
    return result
