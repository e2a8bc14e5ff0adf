"""Serving an exported reranker with onnxruntime + tokenizers only: nothing here imports torch."""

from __future__ import annotations

from rerankforge.serve.runtime import Reranker

__all__ = ["Reranker"]
