"""The first stage's bi-encoder for onnxruntime: a sentence-transformers folder plus ``onnx/model.onnx``, a
graph that ends in the model's own pooling and an L2 normalisation, read by
:class:`rerankforge.serve.embedder.OnnxEmbedder`; and the untuned one, exported once per machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.artifacts import write_json
from rerankforge.errors import StageError
from rerankforge.onnx_trace import trace_to_onnx
from rerankforge.serve.embedder import EMBEDDER_FILE, EMBEDDER_METADATA

UNTUNED_EXPORT_VERSION = "1"  # of the cached exports in $RERANKFORGE_HOME/first_stage: bump when they change


def untuned_export(name: str, opset: int = 17) -> tuple[Path, dict[str, Any]]:
    """The bi-encoder ``name`` as it is, exported for onnxruntime once per model and opset into
    ``$RERANKFORGE_HOME/first_stage``, and its parity figures. The build embeds its chunks with it and the
    export stage copies it into a model folder that serves the untuned first stage.

    Raises OSError when that folder cannot be written, :class:`StageError` when the export fails its parity check.
    """
    from sentence_transformers import SentenceTransformer

    from rerankforge.index.vector_cache import cache_home, model_fingerprint
    from rerankforge.models import resolve_model

    resolved = resolve_model(name)
    cached = cache_home() / "first_stage" / f"{model_fingerprint(resolved)}-opset{opset}-e{UNTUNED_EXPORT_VERSION}"
    parity_file = cached / "parity.json"
    if not parity_file.is_file():
        staging = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            model = SentenceTransformer(resolved, device="cpu")  # its own copy: the export switches it to eager
            write_json(staging / "parity.json", export_first_stage(model, staging, opset=opset))
            shutil.rmtree(cached, ignore_errors=True)
            os.replace(staging, cached)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return cached, json.loads(parity_file.read_text(encoding="utf-8"))


def save_folder(model: Any, out_dir: Path, origin: str) -> None:
    """``model.save`` with the same bytes for the same weights: the tokenizer file without the padding and
    truncation state that encoding leaves in it, and a fixed card instead of one with training times."""
    from tokenizers import Tokenizer

    model.save(str(out_dir), create_model_card=False)  # the card below; sentence-transformers' own prints a bar
    tokenizer_file = out_dir / "tokenizer.json"
    if tokenizer_file.is_file():
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        tokenizer.save(str(tokenizer_file))
    (out_dir / "README.md").write_text(
        "# rerankforge first stage\n\nA sentence-transformers bi-encoder, " + origin + ". `onnx/model.onnx` "
        "(where present) outputs its pooled, L2-normalised embeddings for onnxruntime.\n",
        encoding="utf-8",
    )


def export_first_stage(model: Any, out_dir: Path, *, opset: int = 17, tolerance: float = 1e-4) -> dict[str, Any]:
    """Save the SentenceTransformer ``model`` to ``out_dir`` with its ONNX graph (pooled, normalised vectors).

    Raises :class:`StageError` when the ONNX vectors differ from torch's by more than ``tolerance``.
    """
    import torch

    from rerankforge.serve.embedder import OnnxEmbedder

    model = model.to("cpu").eval()
    save_folder(model, out_dir, "the first stage of a rerankforge scorer")
    sample = (getattr(model, "preprocess", None) or model.tokenize)(["a query", "a somewhat longer document"])
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Embeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            features = self.inner(dict(zip(names, args, strict=True)))
            return torch.nn.functional.normalize(features["sentence_embedding"], p=2, dim=1)

    path = out_dir / EMBEDDER_FILE
    transformer = model[0].auto_model
    with contextlib.suppress(ValueError, AttributeError):  # eager attention: plain ops, as for the cross-encoder
        transformer.set_attn_implementation("eager")
    trace_to_onnx(Embeddings(), tuple(sample[n] for n in names), names, "sentence_embedding", path, opset)
    prompts = {kind: model.prompts.get(kind, "") for kind in ("query", "document") if model.prompts.get(kind)}
    tokenizer = model.tokenizer
    write_json(
        out_dir / EMBEDDER_METADATA,
        {"max_length": int(model.max_seq_length), "pad_token_id": int(tokenizer.pad_token_id or 0), "prompts": prompts},
    )
    if not (out_dir / "tokenizer.json").is_file():
        raise StageError(f"The bi-encoder in {out_dir} has no fast tokenizer (tokenizer.json): it cannot be served.")
    texts = ["how do I reset my password", "To reset your password, open Settings and choose Security.", "x " * 400]
    expected = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    got = OnnxEmbedder(out_dir).embed(texts)
    diff = float(np.max(np.abs(expected - got)))
    if diff > tolerance:
        raise StageError(
            f"The first stage's ONNX vectors differ from torch by {diff:.2e} (> {tolerance}). The export is "
            "wrong; please report this with the bi-encoder's name."
        )
    return {"max_abs_diff": diff, "max_length": int(model.max_seq_length)}
