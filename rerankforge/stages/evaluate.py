"""Stage 6: nDCG@10 and MRR@10 on the held-out synthetic queries, the untuned first stage vs what the build serves
(the tuned first stage, or a fusion with a trained cross-encoder).

Relevance comes from the LLM's grades of each dev query's candidates; both systems rank the same
candidate list, so the comparison isolates what the reranker adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.artifacts import Chunk, Query, read_json, read_jsonl, write_json
from rerankforge.evaluation.on_dev import Scorer, compare_on_dev
from rerankforge.evaluation.verdict import verdict
from rerankforge.ranking import mrr_at_k, ndcg_at_k
from rerankforge.stage import StageContext, StageResult

__all__ = ["VERSION", "Scorer", "compare_on_dev", "mrr_at_k", "ndcg_at_k", "run"]

VERSION = "7"  # 7: the tuned first stage judged on every fold (train.first_stage_folds)
# 6: the tuned cross-encoder alone and the brought reranker, untuned, are candidates
# 5: a build without a cross-encoder
# 4: the served scorer (first stage, tuned first stage, cross-encoder residual) is chosen here
# 3: "better" and a fusion weight above 0 need a significant gain


class Vectors:
    """A bi-encoder's vectors, each document text embedded once across the stage's uses of it."""

    def __init__(self, model: Any, batch_size: int) -> None:
        self.model, self.batch_size = model, batch_size
        self.seen: dict[str, np.ndarray] = {}

    def query(self, text: str) -> np.ndarray:
        from rerankforge.index.embedding import embed

        return embed(self.model.encode_query, [text], self.batch_size)[0]

    def documents(self, texts: list[str]) -> np.ndarray:
        from rerankforge.index.embedding import embed

        todo = [t for t in dict.fromkeys(texts) if t not in self.seen]
        if todo:  # in one call: the encoder batches them by length
            self.seen.update(zip(todo, embed(self.model.encode_document, todo, self.batch_size), strict=True))
        return np.stack([self.seen[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)


def fold_lists(ctx: StageContext) -> list[Any]:
    """The lists of every fold's queries (``train.first_stage_folds`` > 1), each query's tuned cosines from the
    tuning that never saw it: more evidence for the tuned first stage, none for a cross-encoder."""
    from rerankforge.training.bi_encoder import FIRST_STAGE_FOLDS

    folds_dir = ctx.dir("train") / FIRST_STAGE_FOLDS
    if not (folds_dir / "folds.json").is_file():
        return []
    lists = []
    for i, fold in enumerate(read_json(folds_dir / "folds.json")["folds"]):
        tuned = tuned_vectors(ctx, folds_dir / str(i))
        if tuned is None:  # too few queries to tune without this fold
            return []
        lists += dev_lists(ctx, None, tuned, query_ids=fold)
    return lists


def tuned_vectors(ctx: StageContext, tuned_dir: Path | None = None) -> Vectors | None:
    """The tuned first stage the train stage saved (or the one in ``tuned_dir``), if it did."""
    from rerankforge.training.bi_encoder import TUNED_FIRST_STAGE

    tuned_dir = tuned_dir or ctx.dir("train") / TUNED_FIRST_STAGE
    if not (tuned_dir / "modules.json").is_file():
        return None
    from sentence_transformers import SentenceTransformer

    from rerankforge.training.models import device

    return Vectors(SentenceTransformer(str(tuned_dir), device=device()), ctx.config.mine.batch_size)


def dev_lists(
    ctx: StageContext,
    cross_encoder: Any | None,
    tuned: Vectors | None = None,
    brought: Any | None = None,
    query_ids: list[str] | None = None,
) -> list[Any]:
    """The held-out queries' top candidates from the build's first-stage index, with every part's scores
    (``cross_encoder`` None: a build without one; ``tuned``: the tuned first stage, None: not tuned; ``brought``:
    the pretrained reranker the cross-encoder was tuned from, as it came). ``query_ids``: these queries instead
    of the held-out ones (a fold's, with the tuning that never saw them)."""
    import torch

    from rerankforge.evaluation.scorer_choice import DevList
    from rerankforge.index.embedding import embed, load_bi_encoder
    from rerankforge.index.qdrant import QdrantIndex

    chunks = {c.id: c for c in read_jsonl(ctx.run_dir / "parse" / "chunks.jsonl", Chunk)}
    queries = {q.id: q for q in read_jsonl(ctx.run_dir / "queries" / "queries.jsonl", Query)}
    if query_ids is None:
        query_ids = read_json(ctx.run_dir / "train" / "split.json")["dev"]
    dev = [queries[i] for i in query_ids]
    mine = ctx.config.mine
    first = load_bi_encoder(mine.bi_encoder)
    vectors = embed(first.encode_query, [q.text for q in dev], mine.batch_size)
    index = QdrantIndex(path=None if mine.qdrant_url else ctx.dir("mine") / "qdrant", url=mine.qdrant_url,
                        collection=mine.collection)  # fmt: skip
    try:
        hits = index.search(vectors, k=min(ctx.config.evaluate.dev_top_k, len(chunks)))
    finally:
        index.close()
    if tuned is not None:
        ctx.progress(0, len(dev), "embedding held-out candidates")
        tuned.documents([chunks[cid].text for query_hits in hits for cid, _ in query_hits])
    lists = []
    for done, (query, query_hits) in enumerate(zip(dev, hits, strict=True)):
        ctx.progress(done, len(dev), "scoring held-out queries")
        docs = [chunks[cid].text for cid, _ in query_hits]
        tuned_cos = None if tuned is None else tuned.documents(docs) @ tuned.query(query.text)
        pairs = [(query.text, d) for d in docs]
        logits, brought_logits = (
            None if model is None else model.predict(pairs, activation_fn=torch.nn.Identity(), show_progress_bar=False)
            for model in (cross_encoder, brought)
        )
        lists.append(
            DevList(
                grades=[int(cid == query.chunk_id) for cid, _ in query_hits],
                first=np.array([score for _, score in query_hits], dtype=np.float64),
                tuned=None if tuned_cos is None else np.asarray(tuned_cos, dtype=np.float64),
                cross_encoder=None if logits is None else np.asarray(logits, dtype=np.float64).reshape(-1),
                brought=None if brought_logits is None else np.asarray(brought_logits, dtype=np.float64).reshape(-1),
            )
        )
    return lists


def scorer_verdict(choice: dict[str, Any], n: int, k: int) -> str:
    """The verdict on the served scorer, worded to follow the CLI's "The reranker is"."""
    systems = choice["systems"]
    where = f"on {n} held-out synthetic queries, each judged by its own source passage"
    scorer = choice["scorer"]
    first = systems["first stage"]
    if choice.get("judged_queries", n) > n:  # the tuned first stage alone, judged on every fold
        where = (f"on {choice['judged_queries']} synthetic queries, each judged by its own source passage and by "
                 "a tuning that never saw it")  # fmt: skip
        first = systems["first stage, every fold"]
    parts = "the tuned first stage" if scorer["first_stage"] == "tuned" else "the first stage"
    if scorer.get("cross_encoder_alone") == "brought":
        parts = "the reranker it was given, untuned (tuning did not beat it)"
    elif scorer.get("cross_encoder_alone"):
        parts = "the tuned cross-encoder alone"
    elif scorer["cross_encoder_weight"]:
        parts += f" plus the cross-encoder (weight {scorer['cross_encoder_weight']:.3g})"
    learned = {name: value for name, value in systems.items() if name not in ("first stage", "first stage, every fold")}
    best = max(learned, key=lambda name: learned[name]) if learned else None
    tried = f"; best of the rest: {best} {learned[best]:.4f}" if best else ""
    if choice["learned"]:
        evidence = (
            f"nDCG@{k} {choice['gain_ndcg']:+.4f} ({first:.4f} first stage) {where}, paired t-test "
            f"p = {choice['p_value']:.3g}"
        )
    else:
        evidence = f"nDCG@{k} {systems['first stage']:.4f} {where}{tried}, no significant gain above the margin"
    return verdict(
        choice["gain_ndcg"],  # 0 when nothing was learned: the served scorer is then the untuned first stage
        bool(choice["learned"]),
        baseline="the untuned first stage",
        evidence=evidence,
        unsure="",
        worse="the model serves the first stage's own order. Build with more queries or a stronger LLM",
        then=f"it serves {parts}",
    )


def first_stage_scorer(ctx: StageContext, tuned: Vectors | None) -> Scorer:
    """The cosine of the first stage, ``tuned`` or (None) not: the order of a scorer without a cross-encoder."""
    from rerankforge.index.embedding import load_bi_encoder

    vectors = tuned or Vectors(load_bi_encoder(ctx.config.mine.bi_encoder), ctx.config.mine.batch_size)

    def score(query: str, docs: list[str]) -> Sequence[float]:
        return vectors.documents(docs) @ vectors.query(query)

    return score


def run(ctx: StageContext) -> StageResult:
    from rerankforge.evaluation.scorer_choice import choose_scorer
    from rerankforge.training.models import TUNED_CROSS_ENCODER, is_pretrained_reranker, load_cross_encoder

    cfg = ctx.config.evaluate
    model_dir = ctx.dir("train") / TUNED_CROSS_ENCODER
    model = brought = None
    if (model_dir / "config.json").is_file():  # the train stage trained a cross-encoder
        model = load_cross_encoder(str(model_dir), ctx.config.train.max_length)
        if is_pretrained_reranker(ctx.config.train.backbone):  # what the user brought, as it came: the floor
            brought = load_cross_encoder(ctx.config.train.backbone, ctx.config.train.max_length)
    tuned = tuned_vectors(ctx)
    lists = dev_lists(ctx, model, tuned, brought)
    folds = fold_lists(ctx) if tuned is not None else []
    choice = choose_scorer(lists, k=cfg.k, p_value=cfg.dev_p_value, min_gain=cfg.min_gain, first_stage_lists=folds)
    choice["scorer"]["cross_encoder"] = model is not None
    judged = {"k": cfg.k, "relevant_min": ctx.config.grade.positive_min_grade, "min_gain": cfg.min_gain,
              "p_value": cfg.dev_p_value, "progress": ctx.progress}  # fmt: skip
    if model is None:  # the served scorer itself, judged by the LLM's grades
        served = tuned if choice["scorer"]["first_stage"] == "tuned" else None
        result = compare_on_dev(ctx.run_dir, first_stage_scorer(ctx, served), alpha=choice["fusion_alpha"], **judged)
        per_query = result.pop("per_query")
        result["cross_encoder"] = None
    else:

        def scorer(query: str, docs: list[str]) -> Sequence[float]:
            return model.predict([(query, d) for d in docs], show_progress_bar=False)

        result = compare_on_dev(ctx.run_dir, scorer, **judged)
        per_query = result.pop("per_query")
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
