"""The reranker runtime: tokenizers + onnxruntime (or OpenVINO), no torch.

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
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rerankforge.errors import InputError, MissingDependencyError
from rerankforge.fusion import fuse
from rerankforge.serve.embedder import OnnxEmbedder, VectorMemo, first_stage_variants, padded_batches
from rerankforge.serve.engines import (  # noqa: F401  (re-exported: the export stage and tests read them here)
    ONNX_VARIANTS,
    VARIANTS,
    Engine,
    OnnxRuntimeEngine,
    OpenVINOEngine,
    Variant,
    engine_installed,
    import_openvino,
    telemetry_off,
)

logger = logging.getLogger(__name__)

METADATA_FILE = "rerankforge.json"


LongDocuments = Literal["truncate", "window"]


def scorer_weights(scorer: dict[str, Any], *, cross_encoder: bool) -> tuple[float, float, float]:
    """(first-stage weight, cross-encoder weight, bias) of a model folder's scorer. A key the folder lacks (a
    folder exported by hand, or with ``cross_encoder_only``) means that part alone: the cross-encoder's logit when
    there is one, else the first stage's cosine."""
    first = float(scorer.get("first_stage_weight", 0.0 if cross_encoder else 1.0))
    cross = float(scorer.get("cross_encoder_weight", 1.0)) if cross_encoder else 0.0
    return first, cross, float(scorer.get("bias", 0.0))


def read_metadata(model_dir: Path) -> dict[str, Any]:
    path = model_dir / METADATA_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _measuring_tokenizer(path: Path) -> Any:
    """The model's tokenizer with no padding and no truncation: it measures a text's full length."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def has_no_cross_encoder(model_dir: Path) -> bool:
    """The folder's build trained no cross-encoder: its scorer is the first stage alone (``first_stage/``)."""
    return (read_metadata(model_dir).get("scorer") or {}).get("cross_encoder") is False


def available_variants(model_dir: Path) -> list[str]:
    """The variants of an exported model that this machine can run: the file is there and its engine installed."""
    return [name for name, v in VARIANTS.items() if (Path(model_dir) / v.path).is_file() and engine_installed(v.engine)]


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


def _default_variant(model_dir: Path, meta: dict[str, Any]) -> str:
    """The export's recommendation if this machine can run it, else the fastest eligible variant it can run."""
    recommended = meta.get("recommended_variant") or ("int8" if meta.get("int8_recommended") else "fp32")
    if recommended not in VARIANTS or engine_installed(VARIANTS[recommended].engine):
        return recommended
    runnable = set(available_variants(model_dir))
    stats = meta.get("variants", {})
    eligible = [n for n, st in stats.items() if n in runnable and st.get("ndcg_loss", 1.0) <= 0.01]
    fallback = max(eligible, key=lambda n: stats[n].get("pairs_per_s", 0.0)) if eligible else "fp32"
    logger.warning(
        "%s recommends the %s variant, but %s is not installed (pip install 'rerankforge[serve]'): serving %s.",
        model_dir,
        recommended,
        VARIANTS[recommended].engine,
        fallback,
    )
    return fallback


class Reranker:
    """Scores (query, document) pairs with an exported ONNX cross-encoder.

    Args:
        model_dir: a folder written by ``rerankforge build``/``export`` (``onnx/model*.onnx`` + tokenizer).
        variant: which model file and engine, a key of :data:`VARIANTS`; ``None``: the export's recommendation
            (the fastest variant whose nDCG on the held-out queries is within 1 point of fp32), else fp32. In a
            folder without a cross-encoder it names the first stage's file; a folder with one serves its first
            stage in the variant its export chose (``first_stage_variant``, by the same rule).
        quantized: shorthand when ``variant`` is None: True is ``"int8"``, False is ``"fp32"``.
        threads: inference threads (default: the cores this process may use).
        batch_size: pairs per forward pass (pairs are sorted by length first, so batches pad little).
        long_documents: ``"truncate"`` cuts a document that does not fit next to the query (counted);
            ``"window"`` scores overlapping windows of it and keeps the best.
        cross_encoder_only: score with the cross-encoder alone, not the build's scorer (for comparisons).
        vector_cache_mb: memory for the first stage's document vectors (``serve.vector_cache_mb`` by default;
            0: none): a document's vector does not depend on the query, so a passage seen before is not embedded
            again. The scores are the same either way.

    A build's model folder holds its scorer (``scorer`` in ``rerankforge.json``): the first stage's bi-encoder
    (``first_stage/``, tuned by the build or not) and the cross-encoder, combined as
    ``first_stage_weight * cos + cross_encoder_weight * logit + bias``. When the build measured no gain over
    the untuned first stage, the scorer is that first stage alone and ranks exactly as it does. A build that
    trained no cross-encoder (``train.cross_encoder``) leaves a folder whose scorer is the first stage alone.
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
        cross_encoder_only: bool = False,
        vector_cache_mb: float | None = None,
    ) -> None:
        from rerankforge.config import ServeConfig

        if long_documents not in ("truncate", "window"):
            raise InputError(f"long_documents must be 'truncate' or 'window', not {long_documents!r}.")
        self.model_dir = Path(model_dir)
        meta = read_metadata(self.model_dir)
        scorer = meta.get("scorer") or {}
        self.fusion_alpha: float | None = meta.get("fusion_alpha")
        self.batch_size = batch_size
        self.long_documents: LongDocuments = long_documents
        self.threads = threads or usable_cores()
        self.first_stage: OnnxEmbedder | None = None
        cache_mb = ServeConfig().vector_cache_mb if vector_cache_mb is None else vector_cache_mb
        self.vector_cache = VectorMemo(int(cache_mb * 2**20)) if cache_mb > 0 else None
        if has_no_cross_encoder(self.model_dir):
            if cross_encoder_only:
                raise InputError(
                    f"{self.model_dir} holds no cross-encoder (its build trained none): score it with its scorer, "
                    "or build with train.cross_encoder = true."
                )
            self._first_stage_only(scorer, variant)
            return
        if variant is None:
            variant = _default_variant(self.model_dir, meta) if quantized is None else ("int8" if quantized else "fp32")
        if variant not in VARIANTS:
            raise InputError(f"Unknown model variant {variant!r}: use one of {', '.join(VARIANTS)}.")
        spec = VARIANTS[variant]
        try:
            from tokenizers import Tokenizer

            engine_class = OpenVINOEngine if spec.engine == "openvino" else OnnxRuntimeEngine
            import_openvino() if spec.engine == "openvino" else __import__(spec.engine)
        except ImportError as exc:
            raise MissingDependencyError(spec.engine, "serve", "Serving a reranker") from exc
        model_path = self.model_dir / spec.path
        tokenizer_path = self.model_dir / "tokenizer.json"
        if not model_path.is_file() or not tokenizer_path.is_file():
            raise InputError(
                f"{self.model_dir} has no {spec.path} or tokenizer.json. Pass the model folder of a finished "
                "build, or run `rerankforge export MODEL_DIR` first."
            )
        self.onnx_path = model_path
        self.variant = variant
        self.engine = spec.engine
        self.batch_invariant = spec.batch_invariant
        self.max_length = int(meta.get("max_length", 512))
        self.pad_id = int(meta.get("pad_token_id", 0))
        # one tokenizer that encodes pairs (truncating to the window), one that measures plain text
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length, strategy="longest_first")
        self._measure = _measuring_tokenizer(tokenizer_path)
        self._pair_specials = self.tokenizer.num_special_tokens_to_add(is_pair=True)
        self._engine: Any = engine_class(model_path, self.threads)
        self.input_names = self._engine.input_names
        self.precision = self._engine.precision
        scorer = {} if cross_encoder_only else scorer
        self.scorer: dict[str, Any] = scorer
        self.first_stage_weight, self.cross_encoder_weight, self.bias = scorer_weights(scorer, cross_encoder=True)
        if scorer.get("first_stage"):
            self.first_stage = self._open_first_stage(scorer, None)

    def _open_first_stage(self, scorer: dict[str, Any], variant: str | None) -> OnnxEmbedder:
        """The scorer's first stage in ``variant`` (default: the one its export chose, ``first_stage_variant``;
        fp32 where this machine cannot run that one)."""
        folder = self.model_dir / scorer.get("first_stage", "first_stage")
        chosen = variant or scorer.get("first_stage_variant", "fp32")
        if variant is None and chosen not in first_stage_variants(folder):
            logger.warning(
                "%s serves its first stage as %s, which this machine cannot run (pip install 'rerankforge[serve]'): "
                "serving fp32.",
                self.model_dir,
                chosen,
            )
            chosen = "fp32"
        return OnnxEmbedder(
            folder, threads=self.threads, batch_size=max(self.batch_size, 16), cache=self.vector_cache, variant=chosen
        )

    def _first_stage_only(self, scorer: dict[str, Any], variant: str | None) -> None:
        """A model folder without a cross-encoder: its scorer is the first stage's cosine, and ``variant`` chooses
        the first stage's file (``quantized`` names a cross-encoder's file, so it does not apply)."""
        embedder = self._open_first_stage(scorer, variant)
        self.scorer = scorer
        self.first_stage = embedder
        self.first_stage_weight, self.cross_encoder_weight, self.bias = scorer_weights(scorer, cross_encoder=False)
        spec = VARIANTS[embedder.variant]
        self.onnx_path = embedder.folder / spec.path
        self.variant = f"first_stage:{embedder.variant}"
        self.engine = spec.engine
        self.batch_invariant = True  # the embedder's vectors depend on their text alone, in every variant
        self.max_length = embedder.max_length
        self.pad_id = embedder.pad_id
        self.tokenizer = embedder.tokenizer
        self._measure = _measuring_tokenizer(embedder.folder / "tokenizer.json")
        self._pair_specials = self._measure.num_special_tokens_to_add(is_pair=False)  # a document is embedded alone
        self._engine = None
        self.input_names = embedder.input_names
        self.precision = embedder.precision

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
        out = np.empty(len(pairs), dtype=np.float32)
        batches = 0
        for idx, feed in padded_batches(encodings, self.batch_size, self.pad_id, self.input_names):
            out[idx] = self._engine.run(feed).reshape(-1)
            batches += 1
        return out, sum(len(e.ids) for e in encodings), batches

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> PairScores:
        """Raw scores of (query, document) pairs, in order, with truncation counts.

        The build's scorer: ``first_stage_weight * cos(E(q), E(d)) + cross_encoder_weight * CE(q, d) + bias``,
        the cross-encoder skipped when its weight is 0; a model without a first stage (or ``cross_encoder_only``)
        gives the cross-encoder's logits. Pairs of different queries may be mixed: the server batches
        concurrent requests this way.
        """
        if self.first_stage is None:
            return self._cross_encoder_pairs(pairs)
        if not self.first_stage_weight:  # a cross-encoder served alone (its first stage serves the embedding routes)
            scores = self._cross_encoder_pairs(pairs)
            scores.logits = self.cross_encoder_weight * scores.logits + self.bias
            return scores
        cosine = self.first_stage.cosine_pairs(pairs).astype(np.float64)
        combined = self.first_stage_weight * cosine + self.bias
        if self.cross_encoder_weight:
            scores = self._cross_encoder_pairs(pairs)
            scores.logits = combined + self.cross_encoder_weight * scores.logits
            return scores
        docs = [d for _, d in pairs]
        cut = np.array(self.count_tokens(docs), dtype=np.int64) > self.first_stage.max_length - self._pair_specials
        return PairScores(combined, cut.reshape(-1))

    def _cross_encoder_pairs(self, pairs: Sequence[tuple[str, str]]) -> PairScores:
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

    def embed(self, texts: Sequence[str], kind: str = "document") -> np.ndarray:
        """The scorer's first stage as a retriever's embedder: unit float32 vectors of ``texts`` (``kind``:
        ``document`` for what the retriever stores, ``query`` for what it asks). A document's vector is the one
        the scorer ranks with (the memo is shared)."""
        if self.first_stage is None:
            raise InputError(
                f"{self.model_dir} serves no first stage (a cross-encoder alone), so it cannot embed: serve a "
                "build's model folder, whose scorer starts from its first stage."
            )
        return self.first_stage.vectors(texts, kind)

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
