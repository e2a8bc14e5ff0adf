"""One module per stage: parse, queries, mine, grade, train, evaluate, export."""

from __future__ import annotations

from typing import Any

from rerankforge.config import BuildConfig


def llm_cache_inputs(cfg: BuildConfig, template: str) -> dict[str, Any]:
    """What an LLM stage's key depends on besides config: the LLM's identity and the template's text."""
    from rerankforge.templates import load_template

    return {
        "llm": cfg.llm.model_dump(include={"provider", "model", "host", "temperature", "seed", "num_ctx"}),
        "template_sha256": load_template(template).sha256,
    }


def first_stage_folds(cfg: BuildConfig, kept: float = 0) -> int:
    """The first stage's tunings the time budget plans for with ``kept`` queries: ``train.first_stage_folds``
    where it is tuned and the build is small enough to need them (``budget.FOLDS_PLANNED_BELOW_KEPT``)."""
    from rerankforge.budget import FOLDS_PLANNED_BELOW_KEPT

    wanted = cfg.train.tune_first_stage and kept < FOLDS_PLANNED_BELOW_KEPT
    return cfg.train.first_stage_folds if wanted else 1


def grades_source(cfg: BuildConfig) -> bool:
    """``grade.source`` settled: "auto" grades no source passage (a query's source is its positive, at the top
    grade for a cross-encoder); the grader passed 357 of 358, 1,021 of 1,021 and 1,239 of 1,239 in measured
    builds, a quarter of their LLM time."""
    return cfg.grade.source if isinstance(cfg.grade.source, bool) else False


def grade_pairs_per_query(cfg: BuildConfig, n_chunks: int | None = None) -> int:
    """LLM grading calls per kept query: its source passage when graded, and ``grade.top_k`` of its other
    candidates (all of them when None), times ``grade.samples``. The source is among the mined candidates
    or graded on top of them."""
    top_k = min(cfg.mine.top_k, n_chunks) if n_chunks else cfg.mine.top_k
    others = top_k - 1 if cfg.grade.top_k is None else min(cfg.grade.top_k, max(top_k - 1, 0))
    return (int(grades_source(cfg)) + others) * cfg.grade.samples


def cross_encoder_epochs(cfg: BuildConfig) -> float | None:
    """``train.epochs`` where the build trains a cross-encoder, else None: what the time budget plans for."""
    from rerankforge.training.models import trains_cross_encoder

    return cfg.train.epochs if trains_cross_encoder(cfg.train.cross_encoder, cfg.train.backbone) else None
