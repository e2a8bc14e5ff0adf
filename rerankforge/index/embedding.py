"""The first stage's bi-encoder: loaded once per process, normalised vectors, chunk vectors from the cache.

Shared by the queries stage (the round trip), the mine stage, evaluation and export.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from rerankforge.config import MineConfig
from rerankforge.index.vector_cache import VectorCache
from rerankforge.models import resolve_model


@functools.lru_cache(maxsize=1)  # the queries stage's round trip and this stage share one loaded model
def load_bi_encoder(name: str) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model(name), device="cpu" if not _has_cuda() else None)


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def embed(encode: Any, texts: list[str], batch_size: int) -> np.ndarray:
    vectors = encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


def embed_chunks(cfg: MineConfig, texts: list[str]) -> tuple[np.ndarray, int]:
    """Document vectors of ``texts`` with the first stage's bi-encoder, from the cross-build cache where it has
    them (``mine.vector_cache``); also how many came from the cache."""
    model = load_bi_encoder(cfg.bi_encoder)
    if not cfg.vector_cache:
        return embed(model.encode_document, texts, cfg.batch_size), 0
    cache = VectorCache(resolve_model(cfg.bi_encoder))
    vectors = cache.embed(texts, lambda todo: embed(model.encode_document, todo, cfg.batch_size))
    return vectors, cache.hits
