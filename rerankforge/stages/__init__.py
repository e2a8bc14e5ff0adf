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
