"""The ONNX reranker runtime: tokenizers + onnxruntime, no torch.

Pairs are tokenized once, sorted by length and batched so that a batch pads only to its own longest pair;
documents longer than the model's window are truncated (counted) or, on request, scored as the max over
overlapping windows.

Example:
    >>> from rerankforge import Reranker
    >>> reranker = Reranker("examples-rerankforge-run/model")  # doctest: +SKIP
    >>> reranker.rerank("battery runtime", ["The AR-200 runs 9 h.", "Leave policy"])  # doctest: +SKIP
    [(0, 0.93...), (1, 0.01...)]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rerankforge.errors import InputError, MissingDependencyError
from rerankforge.fusion import fuse

METADATA_FILE = "rerankforge.json"
# The ONNX files an export writes (sentence-transformers' ONNX backend reads them with model_kwargs file_name).
ONNX_VARIANTS = {
    "fp32": "model.onnx",
    "int8": "model_qint8.onnx",  # dynamic quantization: int8 weights, activations quantized per batch
    "int8_static": "model_qint8_static.onnx",  # static QDQ: activation ranges calibrated on the build's pairs
}
LongDocuments = Literal["truncate", "window"]


def read_metadata(model_dir: Path) -> dict[str, Any]:
    path = model_dir / METADATA_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class PairScores:
    """Raw scores of pairs plus what had to be cut to fit the model's window."""

    logits: np.ndarray
    cut: np.ndarray  # per pair: the document did not fit beside the query (truncated, or split into windows)
    windows: int = 0  # extra pairs scored for windows
    tokens: int = 0  # tokens fed to the model, padding excluded
    batches: int = 0

    @property
    def truncated(self) -> int:
        return int(self.cut.sum())


class Reranker:
    """Scores (query, document) pairs with an exported ONNX cross-encoder.

    Args:
        model_dir: a folder written by ``rerankforge build``/``export`` (``onnx/model*.onnx`` + tokenizer).
        variant: which ONNX file, a key of :data:`ONNX_VARIANTS`; ``None``: the export's recommendation (the
            fastest variant whose nDCG on the held-out queries is within 1 point of fp32), else fp32.
        quantized: shorthand when ``variant`` is None: True is ``"int8"``, False is ``"fp32"``.
        threads: intra-op threads for onnxruntime (default: the cores this process may use).
        batch_size: pairs per forward pass (pairs are sorted by length first, so batches pad little).
        long_documents: ``"truncate"`` cuts a document that does not fit next to the query (counted);
            ``"window"`` scores overlapping windows of it and keeps the best.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        variant: str | None = None,
        quantized: bool | None = None,
        threads: int | None = None,
        batch_size: int = 8,
        long_documents: LongDocuments = "truncate",
    ) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime", "serve", "Serving a reranker") from exc
        if long_documents not in ("truncate", "window"):
            raise InputError(f"long_documents must be 'truncate' or 'window', not {long_documents!r}.")
        self.model_dir = Path(model_dir)
        meta = read_metadata(self.model_dir)
        if variant is None:
            if quantized is None:
                variant = meta.get("recommended_variant") or ("int8" if meta.get("int8_recommended") else "fp32")
            else:
                variant = "int8" if quantized else "fp32"
        if variant not in ONNX_VARIANTS:
            raise InputError(f"Unknown ONNX variant {variant!r}: use one of {', '.join(ONNX_VARIANTS)}.")
        onnx_path = self.model_dir / "onnx" / ONNX_VARIANTS[variant]
        tokenizer_path = self.model_dir / "tokenizer.json"
        if not onnx_path.is_file() or not tokenizer_path.is_file():
            raise InputError(
                f"{self.model_dir} has no {onnx_path.relative_to(self.model_dir)} or tokenizer.json. Pass the "
                "model folder of a finished build, or run `rerankforge export MODEL_DIR` first."
            )
        self.onnx_path = onnx_path
        self.variant = variant
        # dynamic quantization computes activation scales per batch: a pair's score depends on its batch-mates
        self.batch_invariant = variant != "int8"
        self.max_length = int(meta.get("max_length", 512))
        self.fusion_alpha: float | None = meta.get("fusion_alpha")
        self.batch_size = batch_size
        self.long_documents: LongDocuments = long_documents
        self.pad_id = int(meta.get("pad_token_id", 0))
        # one tokenizer that encodes pairs (truncating to the window), one that measures plain text
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length, strategy="longest_first")
        self._measure = Tokenizer.from_file(str(tokenizer_path))
        self._measure.no_padding()
        self._measure.no_truncation()
        self._pair_specials = self.tokenizer.num_special_tokens_to_add(is_pair=True)
        options = ort.SessionOptions()
        self.threads = threads or usable_cores()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}

    # --- token bookkeeping -------------------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text alone, without special tokens."""
        return [len(e.ids) for e in self._measure.encode_batch(list(texts), add_special_tokens=False)]

    def truncate_to_tokens(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        """Each text cut after its first ``max_tokens`` tokens (on a token boundary); shorter ones unchanged."""
        out = []
        for text, enc in zip(texts, self._measure.encode_batch(list(texts), add_special_tokens=False), strict=True):
            out.append(text if len(enc.offsets) <= max_tokens else text[: enc.offsets[max_tokens - 1][1]])
        return out

    def _windows(self, text: str, budget: int) -> list[str]:
        """Overlapping slices of ``text`` of ``budget`` tokens each (half a window of overlap)."""
        offsets = self._measure.encode(text, add_special_tokens=False).offsets
        stride = max(1, budget // 2)
        pieces = []
        for start in range(0, len(offsets), stride):
            end = min(start + budget, len(offsets))
            pieces.append(text[offsets[start][0] : offsets[end - 1][1]])
            if end == len(offsets):
                break
        return pieces

    # --- scoring -----------------------------------------------------------------------------------

    def _run(self, pairs: Sequence[tuple[str, str]]) -> tuple[np.ndarray, int, int]:
        """Logits of pairs: tokenize once, sort by length, pad each batch to its own longest pair."""
        encodings = self.tokenizer.encode_batch(list(pairs))
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(lengths, kind="stable")
        out = np.empty(len(pairs), dtype=np.float32)
        batches = 0
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = int(lengths[idx].max())
            ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                enc = encodings[i]
                n = len(enc.ids)
                ids[row, :n], mask[row, :n], types[row, :n] = enc.ids, enc.attention_mask, enc.type_ids
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            feed = {k: v for k, v in feed.items() if k in self.input_names}
            out[idx] = self.session.run(None, feed)[0].reshape(-1)
            batches += 1
        return out, int(lengths.sum()), batches

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> PairScores:
        """Raw logits of (query, document) pairs, in order, with truncation counts.

        Pairs of different queries may be mixed: the server batches concurrent requests this way.
        """
        if not pairs:
            return PairScores(np.empty(0, dtype=np.float32), np.zeros(0, dtype=bool))
        queries = list(dict.fromkeys(q for q, _ in pairs))
        query_tokens = dict(zip(queries, self.count_tokens(queries), strict=True))
        doc_tokens = self.count_tokens([d for _, d in pairs])
        budgets = [max(1, self.max_length - self._pair_specials - query_tokens[q]) for q, _ in pairs]
        cut = np.array(doc_tokens) > np.array(budgets)
        too_long = np.flatnonzero(cut).tolist()
        if self.long_documents == "truncate" or not too_long:
            logits, tokens, batches = self._run(pairs)
            return PairScores(logits, cut, tokens=tokens, batches=batches)
        # window mode: each long document becomes several pairs; its score is the best window's
        expanded: list[tuple[str, str]] = []
        owner: list[int] = []
        long_set = set(too_long)
        for i, (query, doc) in enumerate(pairs):
            pieces = self._windows(doc, budgets[i]) if i in long_set else [doc]
            expanded.extend((query, piece) for piece in pieces)
            owner.extend([i] * len(pieces))
        scores, tokens, batches = self._run(expanded)
        logits = np.full(len(pairs), -np.inf, dtype=np.float32)
        np.maximum.at(logits, np.array(owner), scores)
        return PairScores(logits, cut, windows=len(expanded) - len(pairs), tokens=tokens, batches=batches)

    def logits(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Raw scores of (query, document) pairs, in the documents' order."""
        return self.score_pairs([(query, d) for d in documents]).logits

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Relevance in (0, 1): the sigmoid of the logits, as CrossEncoder.predict gives."""
        return sigmoid(self.logits(query, documents))

    def rank(
        self,
        logits: np.ndarray,
        *,
        top_n: int | None = None,
        first_stage_scores: Sequence[float] | None = None,
        raw_scores: bool = False,
    ) -> list[tuple[int, float]]:
        """(index, score) pairs, best first, from one query's logits (see :meth:`rerank`)."""
        scores = logits if raw_scores else sigmoid(logits)
        if first_stage_scores is not None and self.fusion_alpha is not None:
            scores = fuse(sigmoid(logits), first_stage_scores, self.fusion_alpha)
        order = np.argsort(-scores, kind="stable")[: top_n or len(logits)]
        return [(int(i), float(scores[i])) for i in order]

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        first_stage_scores: Sequence[float] | None = None,
    ) -> list[tuple[int, float]]:
        """(index, score) pairs, best first.

        With ``first_stage_scores`` (one per document, higher = better, from your retriever) and a fusion
        weight chosen at build time, the score is ``alpha * minmax(reranker) + (1 - alpha) * minmax(first stage)``
        per query (see :mod:`rerankforge.fusion`); without them, the reranker's sigmoid score.
        """
        return self.rank(self.logits(query, documents), top_n=top_n, first_stage_scores=first_stage_scores)
