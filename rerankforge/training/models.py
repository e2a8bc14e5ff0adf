"""Loading the cross-encoder to train or score, on the device this process should use."""

from __future__ import annotations

from typing import Any

from rerankforge.distributed import Launch
from rerankforge.errors import MissingDependencyError
from rerankforge.models import resolve_model


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
