"""``torch.onnx.export`` of an encoder with dynamic batch and sequence axes, written by rename."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from rerankforge.artifacts import atomic_path


def trace_to_onnx(
    module: Any, inputs: tuple[Any, ...], input_names: list[str], output: str, path: Path, opset: int
) -> None:
    """Trace ``module`` (called with ``inputs`` in the order of ``input_names``) to ``path`` with one output."""
    import torch

    axes = {n: {0: "batch", 1: "sequence"} for n in input_names}
    axes[output] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.simplefilter("ignore")  # tracer notes on shape checks that are constant for encoders
        torch.onnx.export(
            module,
            inputs,
            str(tmp),
            input_names=input_names,
            output_names=[output],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
