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


def grades_source(cfg: BuildConfig) -> bool:
    """``grade.source`` settled: "auto" grades the source passages only for a build that trains a cross-encoder."""
    if isinstance(cfg.grade.source, bool):
        return cfg.grade.source
    from rerankforge.training.models import trains_cross_encoder

    return trains_cross_encoder(cfg.train.cross_encoder, cfg.train.backbone)


def grade_pairs_per_query(cfg: BuildConfig, n_chunks: int | None = None) -> int:
    """LLM grading calls per kept query: its source passage when graded, and ``grade.top_k`` of its other
    candidates (all of them when None), times ``grade.samples``. The source is among the mined candidates
    or graded on top of them."""
    top_k = min(cfg.mine.top_k, n_chunks) if n_chunks else cfg.mine.top_k
    others = top_k - 1 if cfg.grade.top_k is None else min(cfg.grade.top_k, max(top_k - 1, 0))
    return (int(grades_source(cfg)) + others) * cfg.grade.samples
