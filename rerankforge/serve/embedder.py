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

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.errors import InputError, MissingDependencyError

EMBEDDER_FILE = "onnx/model.onnx"
EMBEDDER_METADATA = "rerankforge_embedder.json"  # max length, prompts, pad id: what the runtime needs


def padded_batches(
    encodings: Sequence[Any], batch_size: int, pad_id: int, input_names: set[str]
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(indices, model inputs) per batch: encodings sorted by length, each batch padded to its own longest."""
    lengths = np.array([len(e.ids) for e in encodings])
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = int(lengths[idx].max())
        ids = np.full((len(idx), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        types = np.zeros((len(idx), width), dtype=np.int64)
        for row, i in enumerate(idx):
            enc = encodings[i]
            n = len(enc.ids)
            ids[row, :n], mask[row, :n], types[row, :n] = enc.ids, enc.attention_mask, enc.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        yield idx, {k: v for k, v in feed.items() if k in input_names}


class OnnxEmbedder:
    """A bi-encoder folder written by the export (``onnx/model.onnx`` + ``tokenizer.json``), run by onnxruntime.

    Args:
        folder: the first-stage folder of an exported model (``model/first_stage``).
        threads: intra-op threads.
        batch_size: texts per forward pass.
    """

    def __init__(self, folder: str | Path, *, threads: int = 1, batch_size: int = 16) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime", "serve", "Serving a reranker") from exc
        self.folder = Path(folder)
        meta_path, model_path = self.folder / EMBEDDER_METADATA, self.folder / EMBEDDER_FILE
        if not (meta_path.is_file() and model_path.is_file() and (self.folder / "tokenizer.json").is_file()):
            raise InputError(
                f"{self.folder} has no {EMBEDDER_FILE}, tokenizer.json or {EMBEDDER_METADATA}: it is not an "
                "exported first stage. Run `rerankforge export MODEL_DIR` on the build's model folder again."
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.max_length = int(meta["max_length"])
        self.pad_id = int(meta.get("pad_token_id", 0))
        self.prompts: dict[str, str] = meta.get("prompts", {})
        self.batch_size = batch_size
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}

    def embed(self, texts: Sequence[str], kind: str = "document") -> np.ndarray:
        """Unit vectors of ``texts`` (``kind`` "query" or "document" picks the model's own prompt, if any)."""
        prompt = self.prompts.get(kind, "")
        encodings = self.tokenizer.encode_batch([prompt + t for t in texts])
        out: np.ndarray | None = None
        for idx, feed in padded_batches(encodings, self.batch_size, self.pad_id, self.input_names):
            vectors = self.session.run(None, feed)[0]
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[idx] = vectors
        return out if out is not None else np.empty((0, 0), dtype=np.float32)

    def cosine_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Cosine of each (query, document) pair; each distinct text is embedded once."""
        if not pairs:
            return np.empty(0, dtype=np.float32)
        queries = list(dict.fromkeys(q for q, _ in pairs))
        docs = list(dict.fromkeys(d for _, d in pairs))
        q_vectors = dict(zip(queries, self.embed(queries, "query"), strict=True))
        d_vectors = dict(zip(docs, self.embed(docs, "document"), strict=True))
        return np.array([float(q_vectors[q] @ d_vectors[d]) for q, d in pairs], dtype=np.float32)
