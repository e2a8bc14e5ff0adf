"""The first stage's bi-encoder: loaded once per process, normalised vectors, chunk vectors from the cache.

Shared by the queries stage (the round trip), the mine stage, evaluation and export.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np

from rerankforge.config import MineConfig
from rerankforge.index.vector_cache import VectorCache
from rerankforge.models import resolve_model

logger = logging.getLogger(__name__)


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
    if not cfg.vector_cache:
        return embed_documents(cfg, texts), 0
    cache = VectorCache(resolve_model(cfg.bi_encoder))
    vectors = cache.embed(texts, lambda todo: embed_documents(cfg, todo))
    return vectors, cache.hits


def embed_documents(cfg: MineConfig, texts: list[str]) -> np.ndarray:
    """Document vectors of ``texts``, computed. On a CPU by the bi-encoder's own ONNX export in onnxruntime (the
    export the model folder gets; 2x torch's speed here, and within 1e-4 of torch's vectors, which the export
    checks); on a GPU, or where no export can be made, by torch."""
    if not _has_cuda():
        from rerankforge.index.first_stage_export import untuned_export
        from rerankforge.serve.embedder import OnnxEmbedder
        from rerankforge.serve.runtime import usable_cores

        try:
            folder, _ = untuned_export(cfg.bi_encoder)
            embedder = OnnxEmbedder(folder, threads=usable_cores(), batch_size=cfg.batch_size)
        except Exception as exc:  # no writable home, no onnxruntime, a model the tracer cannot export: torch
            logger.warning("Embedding with torch: the bi-encoder's ONNX export is not available (%s)", exc)
        else:
            return embedder.embed(texts, "document")
    return embed(load_bi_encoder(cfg.bi_encoder).encode_document, texts, cfg.batch_size)
