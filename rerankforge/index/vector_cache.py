"""Chunk vectors cached across builds by (bi-encoder, text): a new query budget or a changed config does not
re-embed an unchanged corpus.

One SQLite file per bi-encoder in ``$RERANKFORGE_HOME/embeddings`` (default ``~/.cache/rerankforge``); the key
of a text is its sha256. A local model folder is told apart by its weight files' sizes and times, so a model
saved again at the same path does not reuse its predecessor's vectors. A cache that cannot be written (full
disk, read-only home) only costs the saving: the vectors are computed as without it.

Example:
    >>> cache = VectorCache("all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> vectors = cache.embed(["a passage"], lambda texts: model.encode(texts))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def cache_home() -> Path:
    base = os.environ.get("RERANKFORGE_HOME")
    return Path(base).expanduser() if base else Path.home() / ".cache" / "rerankforge"


def model_fingerprint(name: str) -> str:
    """The model's name, plus its weight files' sizes and modification times when it is a local folder."""
    folder = Path(name)
    parts = [name]
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.suffix in (".safetensors", ".bin", ".onnx") or path.name == "modules.json":
                stat = path.stat()
                parts.append(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


class VectorCache:
    """Vectors of texts under one bi-encoder (``model``: its resolved name or path)."""

    def __init__(self, model: str, folder: Path | None = None) -> None:
        self.path = (folder or cache_home() / "embeddings") / f"{model_fingerprint(model)}.sqlite"
        self.hits = 0
        self.computed = 0

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=60)
        connection.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        return connection

    def embed(self, texts: list[str], compute: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """Vectors of ``texts`` in order: cached ones read, the rest computed by ``compute`` and stored."""
        keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
        found: dict[str, np.ndarray] = {}
        try:
            connection = self._connect()
        except (sqlite3.Error, OSError) as exc:
            logger.warning("Embedding cache %s cannot be opened (%s): embedding without it", self.path, exc)
            self.computed += len(texts)
            return np.asarray(compute(texts), dtype=np.float32)
        with contextlib.closing(connection):
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), 500):
                batch = unique[start : start + 500]
                rows = connection.execute(
                    f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(batch))})", batch
                ).fetchall()
                found.update((key, np.frombuffer(blob, dtype=np.float32)) for key, blob in rows)
            missing = [i for i, key in enumerate(keys) if key not in found]
            first_of = {}
            for i in missing:
                first_of.setdefault(keys[i], i)
            todo = list(first_of.values())
            if todo:
                vectors = np.asarray(compute([texts[i] for i in todo]), dtype=np.float32)
                for i, vector in zip(todo, vectors, strict=True):
                    found[keys[i]] = vector
                try:
                    with connection:
                        connection.executemany(
                            "INSERT OR REPLACE INTO vectors (key, vector) VALUES (?, ?)",
                            [(keys[i], found[keys[i]].tobytes()) for i in todo],
                        )
                except (sqlite3.Error, OSError) as exc:
                    logger.warning("Embedding cache %s cannot be written (%s): vectors kept in memory", self.path, exc)
            self.hits += len(texts) - len(todo)
            self.computed += len(todo)
        return np.stack([found[key] for key in keys]) if keys else np.empty((0, 0), dtype=np.float32)
