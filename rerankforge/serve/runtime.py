"""The ONNX reranker runtime: tokenizers + onnxruntime, no torch.

Example:
    >>> from rerankforge import Reranker
    >>> reranker = Reranker("examples-rerankforge-run/model")  # doctest: +SKIP
    >>> reranker.rerank("battery runtime", ["The AR-200 runs 9 h.", "Leave policy"])  # doctest: +SKIP
    [(0, 0.93...), (1, 0.01...)]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.errors import InputError, MissingDependencyError
from rerankforge.fusion import fuse

METADATA_FILE = "rerankforge.json"


def read_metadata(model_dir: Path) -> dict[str, Any]:
    path = model_dir / METADATA_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


class Reranker:
    """Scores (query, document) pairs with an exported ONNX cross-encoder.

    Args:
        model_dir: a folder written by ``rerankforge build``/``export`` (``onnx/model*.onnx`` + tokenizer).
        quantized: use ``onnx/model_qint8.onnx``; ``None``: int8 when the export recommended it (its nDCG on
            the held-out queries within 1 point of fp32), else fp32.
        threads: intra-op threads for onnxruntime (default: all cores).
        batch_size: pairs per forward pass.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        quantized: bool | None = None,
        threads: int | None = None,
        batch_size: int = 32,
    ) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime", "serve", "Serving a reranker") from exc
        self.model_dir = Path(model_dir)
        meta = read_metadata(self.model_dir)
        if quantized is None:
            quantized = bool(meta.get("int8_recommended", False))
        onnx_path = self.model_dir / "onnx" / ("model_qint8.onnx" if quantized else "model.onnx")
        tokenizer_path = self.model_dir / "tokenizer.json"
        if not onnx_path.is_file() or not tokenizer_path.is_file():
            raise InputError(
                f"{self.model_dir} has no {onnx_path.relative_to(self.model_dir)} or tokenizer.json. Pass the "
                "model folder of a finished build, or run `rerankforge export MODEL_DIR` first."
            )
        self.onnx_path = onnx_path
        self.max_length = int(meta.get("max_length", 512))
        self.fusion_alpha: float | None = meta.get("fusion_alpha")
        self.batch_size = batch_size
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.enable_truncation(self.max_length, strategy="longest_first")
        self.tokenizer.enable_padding(pad_id=int(meta.get("pad_token_id", 0)), pad_token=meta.get("pad_token", "[PAD]"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}

    def logits(self, query: str, documents: list[str]) -> np.ndarray:
        """Raw scores of (query, document) pairs, in the documents' order."""
        out = np.empty(len(documents), dtype=np.float32)
        for start in range(0, len(documents), self.batch_size):
            batch = self.tokenizer.encode_batch([(query, d) for d in documents[start : start + self.batch_size]])
            feed = {
                "input_ids": np.array([e.ids for e in batch], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in batch], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in batch], dtype=np.int64),
            }
            feed = {k: v for k, v in feed.items() if k in self.input_names}
            out[start : start + len(batch)] = self.session.run(None, feed)[0].reshape(-1)
        return out

    def score(self, query: str, documents: list[str]) -> np.ndarray:
        """Relevance in (0, 1): the sigmoid of the logits, as CrossEncoder.predict gives."""
        return 1.0 / (1.0 + np.exp(-self.logits(query, documents)))

    def rerank(
        self,
        query: str,
        documents: list[str],
        top_n: int | None = None,
        first_stage_scores: list[float] | None = None,
    ) -> list[tuple[int, float]]:
        """(index, score) pairs, best first.

        With ``first_stage_scores`` (one per document, higher = better, from your retriever) and a fusion
        weight chosen at build time, the score is ``alpha * minmax(reranker) + (1 - alpha) * minmax(first stage)``
        per query (see :mod:`rerankforge.fusion`); without them, the reranker's sigmoid score.
        """
        scores = self.score(query, documents)
        if first_stage_scores is not None and self.fusion_alpha is not None:
            scores = fuse(scores, first_stage_scores, self.fusion_alpha)
        order = np.argsort(-scores, kind="stable")[: top_n or len(documents)]
        return [(int(i), float(scores[i])) for i in order]
