"""Stage 6: nDCG@10 and MRR@10 on the held-out synthetic queries, the untuned first stage vs what the build serves
(the tuned first stage, or a fusion with a trained cross-encoder).

Relevance comes from the LLM's grades of each dev query's candidates; both systems rank the same
candidate list, so the comparison isolates what the reranker adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rerankforge.artifacts import read_json, write_json
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


def scorer_verdict(choice: dict[str, Any], n: int, k: int) -> str:
    """The verdict on the served scorer, worded to follow the CLI's "The reranker is"."""
    systems = choice["systems"]
    where = f"on {n} held-out synthetic queries, each judged by its own source passage"
    scorer = choice["scorer"]
    first = systems["first stage"]
    if choice.get("judged_queries", n) > n:  # the tuned first stage alone, judged on every fold
        where = (f"on {choice['judged_queries']} held-out synthetic queries (the held-out split and every fold), "
                 "each judged by its own source passage under a tuning that never saw it")  # fmt: skip
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
        evidence = f"nDCG@{k} {first:.4f} {where}{tried}, no significant gain above the margin"
    return verdict(
        choice["gain_ndcg"],  # 0 when nothing was learned: the served scorer is then the untuned first stage
        bool(choice["learned"]),
        baseline="the untuned first stage",
        evidence=evidence,
        unsure="",
        worse="the model serves the first stage's own order. Build with more queries or a stronger LLM",
        then=f"it serves {parts}",
    )


def first_stage_scorer(ctx: StageContext, tuned: Any | None) -> Scorer:
    """The cosine of the first stage, ``tuned`` or (None) not: the order of a scorer without a cross-encoder."""
    from rerankforge.evaluation.held_out import Vectors
    from rerankforge.index.embedding import load_bi_encoder

    vectors = tuned or Vectors(load_bi_encoder(ctx.config.mine.bi_encoder), ctx.config.mine.batch_size)

    def score(query: str, docs: list[str]) -> Sequence[float]:
        return vectors.documents(docs) @ vectors.query(query)

    return score


def run(ctx: StageContext) -> StageResult:
    from rerankforge.evaluation.held_out import fold_lists, held_out_lists, tuned_vectors
    from rerankforge.evaluation.scorer_choice import choose_scorer
    from rerankforge.training.bi_encoder import TUNED_FIRST_STAGE
    from rerankforge.training.models import TUNED_CROSS_ENCODER, is_pretrained_reranker, load_cross_encoder

    cfg = ctx.config.evaluate
    model_dir = ctx.dir("train") / TUNED_CROSS_ENCODER
    model = brought = None
    if (model_dir / "config.json").is_file():  # the train stage trained a cross-encoder
        model = load_cross_encoder(str(model_dir), ctx.config.train.max_length)
        if is_pretrained_reranker(ctx.config.train.backbone):  # what the user brought, as it came: the floor
            brought = load_cross_encoder(ctx.config.train.backbone, ctx.config.train.max_length)
    tuned = tuned_vectors(ctx.dir("train") / TUNED_FIRST_STAGE, ctx.config.mine.batch_size)
    dev_ids = read_json(ctx.dir("train") / "split.json")["dev"]
    lists = held_out_lists(ctx.run_dir, ctx.config, dev_ids, cross_encoder=model, tuned=tuned, brought=brought,
                           progress=ctx.progress)  # fmt: skip
    folds = fold_lists(ctx.run_dir, ctx.config, ctx.progress) if tuned is not None else []
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
