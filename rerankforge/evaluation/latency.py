"""Latency of an exported model: milliseconds to score one query against n documents, per model variant."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

LATENCY_SIZES = (1, 10, 50)


def measure_latency(
    model_dir: Path, query: str, documents: list[str], sizes: tuple[int, ...] = LATENCY_SIZES, repeats: int = 3
) -> dict[str, Any]:
    """Median wall time of ``Reranker.logits(query, n documents)`` for each n, per variant this machine can run.

    Documents are cycled to reach n. A warm-up call comes first, so session start-up is not counted.
    """
    from rerankforge.serve.runtime import Reranker, available_variants

    if not documents:
        raise ValueError("measure_latency needs at least one document")
    result: dict[str, Any] = {"sizes": list(sizes), "repeats": repeats, "ms": {}}
    for label in available_variants(model_dir):
        reranker = Reranker(model_dir, variant=label)
        reranker.logits(query, documents[:1])
        timings = []
        for n in sizes:
            batch = [documents[i % len(documents)] for i in range(n)]
            runs = []
            for _ in range(repeats):
                started = time.perf_counter()
                reranker.logits(query, batch)
                runs.append((time.perf_counter() - started) * 1000)
            timings.append(round(statistics.median(runs), 2))
        result["ms"][label] = timings
    return result
