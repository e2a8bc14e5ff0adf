"""Rerankers to evaluate: a torch CrossEncoder folder or Hugging Face id, or an exported ONNX model folder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rerankforge.errors import InputError

ScoreFn = Callable[[str, list[str]], Sequence[float]]


@dataclass
class Scorer:
    """A named reranker: ``score(query, documents)`` gives one raw score per document (higher = better)."""

    name: str
    score: ScoreFn
    kind: str  # "onnx fp32", "onnx int8", "onnx int8_static" or "torch"
    fusion_alpha: float | None = None


def _has_torch_weights(folder: Path) -> bool:
    return any((folder / n).is_file() for n in ("model.safetensors", "pytorch_model.bin"))


def load_scorer(
    model: str | Path, *, onnx: bool | None = None, int8: bool | None = None, max_length: int = 512
) -> Scorer:
    """Load a reranker for evaluation.

    Args:
        model: a model folder (rerankforge build/export, or any CrossEncoder folder) or a Hugging Face id that
            is in the local cache.
        onnx: ``True`` scores with ``onnx/model*.onnx`` (and the build's scorer, as served); ``None``: ONNX when
            the folder has it and either no torch weights or a build's scorer, else torch (the cross-encoder alone).
        int8: with ONNX, the int8 model; ``None``: what the build recommended for serving.
        max_length: torch only: tokens of (query, document).
    """
    from rerankforge.serve.runtime import has_no_cross_encoder, read_metadata

    folder = Path(model)
    is_folder = folder.is_dir()
    alpha = read_metadata(folder).get("fusion_alpha") if is_folder else None
    if is_folder and onnx is None:
        # a build's folder is scored as it is served: its scorer (first stage and cross-encoder) in ONNX
        exported = (folder / "onnx" / "model.onnx").is_file() or has_no_cross_encoder(folder)
        onnx = exported and (not _has_torch_weights(folder) or "scorer" in read_metadata(folder))
    if onnx:
        if not is_folder:
            raise InputError(f"{model} is not a folder: --onnx needs a model folder with onnx/model.onnx.")
        from rerankforge.serve.runtime import Reranker

        reranker = Reranker(folder, quantized=int8)
        kind = f"onnx {reranker.variant}"
        return Scorer(name=str(model), score=reranker.logits, kind=kind, fusion_alpha=alpha)
    if is_folder and has_no_cross_encoder(folder):
        raise InputError(
            f"{folder} holds no cross-encoder to load with torch (its build trained none): score it in ONNX, "
            "as it is served."
        )
    if is_folder and not (folder / "config.json").is_file():
        raise InputError(
            f"{folder} holds no model (no config.json, no onnx/model.onnx). Pass a run's model folder, a "
            "CrossEncoder folder, or a Hugging Face id from the local cache."
        )
    from rerankforge.training.models import load_cross_encoder

    meta_length = read_metadata(folder).get("max_length") if is_folder else None
    try:
        cross_encoder = load_cross_encoder(str(model), int(meta_length or max_length))
    except OSError as exc:
        raise InputError(
            f"Cannot load the reranker '{model}': {exc}. Pass a local folder, or a Hugging Face id that is in the "
            "local cache (set HF_HUB_OFFLINE=0 once to download it)."
        ) from exc

    def score(query: str, documents: list[str]) -> Sequence[float]:
        import torch

        pairs = [(query, d) for d in documents]
        return cross_encoder.predict(pairs, activation_fn=torch.nn.Identity(), show_progress_bar=False)

    return Scorer(name=str(model), score=score, kind="torch", fusion_alpha=alpha)
