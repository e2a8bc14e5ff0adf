"""rerankforge: turn a folder of private documents into your own reranker (a tuned bi-encoder, and a tuned
cross-encoder when the backbone is a pretrained reranker; the build serves what it measured best).

Public API:
    - :func:`build` runs (or resumes) the pipeline for a :class:`BuildConfig`.
    - :func:`load_config` reads a TOML config and applies overrides.
    - :class:`Reranker` serves an exported ONNX model (onnxruntime + tokenizers, no torch).

Example:
    >>> from rerankforge import build, load_config
    >>> result = build(load_config("examples/rerankforge.toml"))  # doctest: +SKIP
    >>> result.summary("evaluate")["verdict"]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rerankforge.config import BuildConfig, load_config
from rerankforge.errors import RerankforgeError

if TYPE_CHECKING:
    from rerankforge.pipeline import BuildResult
    from rerankforge.serve.runtime import Reranker

__version__ = "0.1.0"
__all__ = ["BuildConfig", "Reranker", "RerankforgeError", "build", "load_config"]


def build(config: BuildConfig, **kwargs: Any) -> BuildResult:
    """Run the build; see :func:`rerankforge.pipeline.build` for the options."""
    from rerankforge.pipeline import build as _build

    return _build(config, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "Reranker":  # lazy: serving needs only onnxruntime + tokenizers
        from rerankforge.serve.runtime import Reranker

        return Reranker
    raise AttributeError(name)
