"""The scorer's first stage without torch: a bi-encoder exported to ONNX, cosine of its normalised embeddings.

The exported graph ends in the sentence-transformers model's own pooling and an L2 normalisation, so a dot
product of two outputs is their cosine. Texts are tokenized once, sorted by length and padded per batch.

Example:
    >>> from rerankforge.serve.embedder import OnnxEmbedder
    >>> embedder = OnnxEmbedder("run/model/first_stage")  # doctest: +SKIP
    >>> embedder.cosine(["battery life"], ["A charge lasts nine hours.", "Leave policy"])  # doctest: +SKIP
    array([[0.43, 0.02]], dtype=float32)
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.artifacts import file_sha256, text_sha256
from rerankforge.errors import InputError, MissingDependencyError
from rerankforge.serve.engines import VARIANTS, engine_installed, open_engine

logger = logging.getLogger(__name__)

EMBEDDER_FILE = "onnx/model.onnx"
EMBEDDER_METADATA = "rerankforge_embedder.json"  # max length, prompts, pad id: what the runtime needs
CHUNK_VECTORS = "chunk_vectors.npz"  # the build's own chunks' vectors, keyed by their text's sha256
WIDTH_STEP = 64  # OpenVINO variants pad every input to a multiple of this many tokens (4 widths at 256)


def padded_batches(
    encodings: Sequence[Any], batch_size: int, pad_id: int, input_names: set[str], width_step: int = 1
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(indices, model inputs) per batch: encodings sorted by length, each batch padded to its own longest.

    With ``width_step`` > 1 every input is padded to the next multiple of it and a batch holds inputs of one width:
    an engine then sees few shapes, and a text's padded input is the same whoever its batch-mates are."""
    lengths = np.array([len(e.ids) for e in encodings])
    widths = -(-lengths // width_step) * width_step
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        end = min(start + batch_size, len(order))
        if width_step > 1:  # cut the batch where the width changes
            end = start + int(np.sum(widths[order[start:end]] == widths[order[start]]))
        idx = order[start:end]
        start = end
        width = int(lengths[idx].max()) if width_step == 1 else int(widths[idx[0]])
        ids = np.full((len(idx), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        types = np.zeros((len(idx), width), dtype=np.int64)
        for row, i in enumerate(idx):
            enc = encodings[i]
            n = len(enc.ids)
            ids[row, :n], mask[row, :n], types[row, :n] = enc.ids, enc.attention_mask, enc.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        yield idx, {k: v for k, v in feed.items() if k in input_names}


def text_key(text: str) -> bytes:
    """A document's key in the memo and in ``chunk_vectors.npz``: its text's sha256 (the text itself is not kept)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def write_chunk_vectors(folder: Path, texts: Sequence[str], vectors: np.ndarray, variant: str = "fp32") -> Path:
    """Save ``vectors`` (one per text of ``texts``, from the ``variant`` of the exported first stage in
    ``folder``) beside it, keyed by the texts' sha256 and the variant's fingerprint: a server's memo starts with
    them when it serves that variant."""
    fingerprint = _fingerprint(folder / EMBEDDER_METADATA, folder, variant)
    keys = np.frombuffer(b"".join(text_key(t) for t in texts), dtype=np.uint8).reshape(len(texts), 32)
    path = folder / CHUNK_VECTORS
    with path.open("wb") as handle:
        np.savez(handle, vectors=np.asarray(vectors, dtype=np.float32), keys=keys, fingerprint=np.array(fingerprint))
    return path


def _fingerprint(meta_path: Path, folder: Path, variant: str = "fp32") -> str:
    """A variant's identity: its graph (and weights file), the engine that runs it and what shapes its inputs
    (a tuned and an untuned export differ, and so do their variants)."""
    spec = VARIANTS[variant]
    graph = folder / spec.path
    weights = graph.with_suffix(".bin")
    parts = [meta_path.read_text(encoding="utf-8"), file_sha256(graph)]
    if weights != graph and weights.is_file():
        parts.append(file_sha256(weights))
    if variant != "fp32":  # the fp32 key of earlier exports stays as it was
        parts.append(variant)
    if spec.engine == "openvino":  # padded inputs: vectors differ from an unpadded pass in their last bits
        parts.append(f"width{WIDTH_STEP}")
    return text_sha256("".join(parts))[:16]


def first_stage_variants(folder: Path) -> list[str]:
    """The variants of an exported first stage in ``folder`` that this machine can run."""
    return [n for n, v in VARIANTS.items() if (Path(folder) / v.path).is_file() and engine_installed(v.engine)]


class VectorMemo:
    """Document vectors kept in memory, least recently used first out, within ``max_bytes`` (the vectors' own
    bytes). Safe to share between threads; the server's micro-batches all read and fill the one memo.

    Example:
        >>> memo = VectorMemo(max_bytes=2 * 4 * 3)  # room for two 3-dim float32 vectors
        >>> memo.store([("m", "a"), ("m", "b"), ("m", "c")], np.ones((3, 3), dtype=np.float32))
        >>> [v is None for v in memo.lookup([("m", "a"), ("m", "c")])], memo.stats()["bytes"]
        ([True, False], 24)
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._vectors: OrderedDict[tuple[str, Any], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = self.hits = self.misses = self.evictions = 0

    def lookup(self, keys: Sequence[tuple[str, Any]]) -> list[np.ndarray | None]:
        """The vector of each key, or None; a found one becomes the most recently used."""
        found: list[np.ndarray | None] = []
        with self._lock:
            for key in keys:
                vector = self._vectors.get(key)
                if vector is not None:
                    self._vectors.move_to_end(key)
                found.append(vector)
            hits = sum(v is not None for v in found)
            self.hits += hits
            self.misses += len(found) - hits
        return found

    def store(self, keys: Sequence[tuple[str, Any]], vectors: np.ndarray) -> None:
        """Keep ``vectors`` (one row per key, copied), evicting the least recently used beyond the cap."""
        with self._lock:
            for key, vector in zip(keys, vectors, strict=True):
                if key in self._vectors or vector.nbytes > self.max_bytes:
                    continue
                self._vectors[key] = vector.copy()
                self.bytes += vector.nbytes
                while self.bytes > self.max_bytes:
                    _, old = self._vectors.popitem(last=False)
                    self.bytes -= old.nbytes
                    self.evictions += 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "bytes": self.bytes, "entries": len(self._vectors),
                    "evictions": self.evictions, "max_bytes": self.max_bytes}  # fmt: skip


class OnnxEmbedder:
    """A bi-encoder folder written by the export (``onnx/model.onnx`` + ``tokenizer.json``), run by onnxruntime.

    Args:
        folder: the first-stage folder of an exported model (``model/first_stage``).
        threads: intra-op threads.
        batch_size: texts per forward pass.
        cache: a memo of document vectors (shared, or None: every document is embedded each time); its keys
            carry this model's fingerprint, so one memo can serve several embedders.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        threads: int = 1,
        batch_size: int = 16,
        cache: VectorMemo | None = None,
        variant: str = "fp32",
    ) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependencyError("tokenizers", "serve", "Serving a reranker") from exc
        self.folder = Path(folder)
        if variant not in VARIANTS:
            raise InputError(f"Unknown first-stage variant {variant!r}: use one of {', '.join(VARIANTS)}.")
        spec = VARIANTS[variant]
        meta_path, model_path = self.folder / EMBEDDER_METADATA, self.folder / EMBEDDER_FILE
        if not (meta_path.is_file() and model_path.is_file() and (self.folder / "tokenizer.json").is_file()):
            raise InputError(
                f"{self.folder} has no {EMBEDDER_FILE}, tokenizer.json or {EMBEDDER_METADATA}: it is not an "
                "exported first stage. Run `rerankforge export MODEL_DIR` on the build's model folder again."
            )
        if not (self.folder / spec.path).is_file():
            raise InputError(
                f"{self.folder} has no {spec.path}: its export wrote no {variant} variant of the first stage "
                f"(variants here: {', '.join(first_stage_variants(self.folder)) or 'none'})."
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.max_length = int(meta["max_length"])
        self.pad_id = int(meta.get("pad_token_id", 0))
        self.prompts: dict[str, str] = meta.get("prompts", {})
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self._measure = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self._measure.no_padding()
        self._measure.no_truncation()
        try:
            self._engine = open_engine(spec, self.folder / spec.path, threads)
        except ImportError as exc:
            raise MissingDependencyError(spec.engine, "serve", "Serving a first stage") from exc
        self.variant = variant
        self.input_names = self._engine.input_names
        # A text's vector must be a function of the text alone, so that the memo's vectors are the ones a pass
        # would compute. OpenVINO's kernels depend on the input's shape, not on the other rows: each input is
        # padded to a multiple of WIDTH_STEP tokens and batched with inputs of its width, where this machine's
        # engine gives a row the same vector alone or among others (checked here). Otherwise one text per pass.
        self.width_step = 1
        self.batch_size = batch_size if spec.batch_invariant else 1
        if not spec.batch_invariant and spec.engine == "openvino" and self.max_length % WIDTH_STEP == 0:
            self.width_step, self.batch_size = WIDTH_STEP, batch_size
            if batch_size > 1 and not self._rows_independent():
                logger.info("%s: OpenVINO's rows depend on their batch-mates here; one text per pass", folder)
                self.batch_size = 1
        self.precision = self._engine.precision
        self.cache = cache
        self.fingerprint = _fingerprint(meta_path, self.folder, variant) if cache is not None else ""  # memo keys
        self.preloaded = self._preload() if cache is not None else 0

    def _rows_independent(self) -> bool:
        """Whether texts of one padded width get the same vectors alone as in a batch (also a first warm-up)."""
        texts = ["alpha beta gamma", "delta epsilon", "zeta eta theta iota"]
        together = self.embed(texts)
        size, self.batch_size = self.batch_size, 1
        try:
            alone = self.embed(texts)
        finally:
            self.batch_size = size
        return bool(np.array_equal(together, alone))

    def _preload(self) -> int:
        """Fill the memo from the build's ``chunk_vectors.npz`` (as many as fit); how many were loaded."""
        path = self.folder / CHUNK_VECTORS
        if self.cache is None or not path.is_file():
            return 0
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["fingerprint"]) != self.fingerprint:
                logger.warning("%s belongs to another model than %s: not used", path, self.folder)
                return 0
            vectors, keys = saved["vectors"], saved["keys"]
        room = self.cache.max_bytes // max(1, vectors[0].nbytes) if len(vectors) else 0
        count = min(len(vectors), room)
        self.cache.store([(self.fingerprint, bytes(k)) for k in keys[:count]], vectors[:count])
        return count

    def embed(self, texts: Sequence[str], kind: str = "document") -> np.ndarray:
        """Unit vectors of ``texts`` (``kind`` "query" or "document" picks the model's own prompt, if any)."""
        prompt = self.prompts.get(kind, "")
        return self._embed_prompted([prompt + t for t in texts])

    def _embed_prompted(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        out: np.ndarray | None = None
        batches = padded_batches(encodings, self.batch_size, self.pad_id, self.input_names, self.width_step)
        for idx, feed in batches:
            vectors = self._engine.run(feed)
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[idx] = vectors
        return out if out is not None else np.empty((0, 0), dtype=np.float32)

    @functools.cached_property
    def dimension(self) -> int:
        """The length of the model's vectors."""
        return int(self.embed(["x"]).shape[1])

    def token_counts(self, texts: Sequence[str], kind: str = "document") -> list[int]:
        """Tokens of each text as the model would see it untruncated (its prompt and special tokens included):
        over ``max_length``, the model reads only the first ``max_length``."""
        prompt = self.prompts.get(kind, "")
        return [len(e.ids) for e in self._measure.encode_batch([prompt + t for t in texts])]

    def vectors(self, texts: Sequence[str], kind: str = "document") -> np.ndarray:
        """Unit vectors of ``texts`` as a retriever stores (``document``) or asks (``query``): documents through
        the memo, so a passage reranked before is not embedded again, and the other way round."""
        if kind not in ("query", "document"):
            raise InputError(f"kind must be 'query' or 'document', not {kind!r}.")
        return self.document_vectors(texts) if kind == "document" else self.embed(texts, "query")

    def document_vectors(self, docs: Sequence[str]) -> np.ndarray:
        """Unit vectors of ``docs``: from the memo where it has them, the rest embedded (and kept there)."""
        return self._documents_and_queries(docs, [])[0]

    def _documents_and_queries(self, docs: Sequence[str], queries: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The vectors of ``docs`` (through the memo) and of ``queries``. Where a row's vector depends only on its
        padded width (the OpenVINO forms here), the queries ride in the same passes as the new documents: a
        request of 20 documents makes one pass per width instead of one more for its query."""
        together = bool(queries) and self.width_step > 1 and self.batch_size > 1
        q_vectors = np.empty((0, 0), dtype=np.float32)
        if queries and not together:
            q_vectors = self.embed(queries, "query")
        keys = [(self.fingerprint, text_key(d)) for d in docs] if self.cache is not None else []
        found = self.cache.lookup(keys) if self.cache is not None else [None] * len(docs)
        missing = list(dict.fromkeys(d for d, v in zip(docs, found, strict=True) if v is None))
        if missing or together:
            doc_prompt, query_prompt = self.prompts.get("document", ""), self.prompts.get("query", "")
            asked = [doc_prompt + d for d in missing] + ([query_prompt + q for q in queries] if together else [])
            fresh = self._embed_prompted(asked)
            if together:
                fresh, q_vectors = fresh[: len(missing)], fresh[len(missing) :]
            if self.cache is not None:
                key_of = dict(zip(docs, keys, strict=True))
                self.cache.store([key_of[d] for d in missing], fresh)
            computed = dict(zip(missing, fresh, strict=True))
            found = [computed[d] if v is None else v for d, v in zip(docs, found, strict=True)]
        d_vectors = np.stack(found) if found else np.empty((0, 0), dtype=np.float32)
        return d_vectors, q_vectors

    def cosine_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Cosine of each (query, document) pair; each distinct text is embedded once (a document not at all
        when the memo holds it)."""
        if not pairs:
            return np.empty(0, dtype=np.float32)
        queries = list(dict.fromkeys(q for q, _ in pairs))
        docs = list(dict.fromkeys(d for _, d in pairs))
        d_found, q_found = self._documents_and_queries(docs, queries)
        q_vectors = dict(zip(queries, q_found, strict=True))
        d_vectors = dict(zip(docs, d_found, strict=True))
        return np.array([float(q_vectors[q] @ d_vectors[d]) for q, d in pairs], dtype=np.float32)
