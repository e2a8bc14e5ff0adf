"""Loading the cross-encoder to train or score, on the device this process should use."""

from __future__ import annotations

from typing import Any

from rerankforge.distributed import Launch
from rerankforge.errors import InputError, MissingDependencyError
from rerankforge.models import resolve_model

# train/cross_encoder: the cross-encoder tuned on the training queries; the export puts the served one in model/
TUNED_CROSS_ENCODER = "cross_encoder"


def device() -> str:
    """Where training runs: this rank's GPU under torchrun, Apple's MPS, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{Launch.from_env().local_rank}"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_cross_encoder(name: str, max_length: int) -> Any:
    try:
        from sentence_transformers import CrossEncoder
    except ImportError as exc:
        raise MissingDependencyError("sentence-transformers", "build", "Training") from exc
    return CrossEncoder(resolve_model(name), num_labels=1, max_length=max_length, device=device())


def is_pretrained_reranker(name: str) -> bool:
    """Whether ``name`` is a trained reranker (a sequence-classification model), not a plain encoder."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve_model(name))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"Cannot read the model config of train.backbone '{name}': {exc}. Pass a local folder, or a Hugging "
            "Face id that is in the local cache."
        ) from exc
    return any(arch.endswith("ForSequenceClassification") for arch in config.architectures or [])


def trains_cross_encoder(setting: bool | str, backbone: str) -> bool:
    """``train.cross_encoder``: True or False as set; "auto" trains one only on a pretrained reranker."""
    return setting if isinstance(setting, bool) else is_pretrained_reranker(backbone)
