"""Choose the training max length from the data's own token lengths, and count what it truncates."""

from __future__ import annotations

from typing import Any

import numpy as np

ROUND_TO = 16  # lengths are rounded up to a multiple of this (friendlier kernels, fewer distinct shapes)


def pair_lengths(tokenizer: Any, rows: list[dict[str, Any]]) -> np.ndarray:
    """Token length of every (query, doc) pair of the training groups, special tokens included."""
    pairs = [(row["query"], doc) for row in rows for doc in row["docs"]]
    if not pairs:
        return np.zeros(0, dtype=np.int64)
    encoded = tokenizer([q for q, _ in pairs], [d for _, d in pairs], truncation=False, add_special_tokens=True)
    return np.asarray([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)


def choose_max_length(lengths: np.ndarray, cap: int) -> dict[str, Any]:
    """The smallest multiple of 16 that holds every pair, at most ``cap``; with the truncation it leaves.

    Example:
        >>> choose_max_length(np.array([30, 70, 300]), cap=256)["max_length"]
        256
        >>> choose_max_length(np.array([30, 70, 90]), cap=256)["max_length"]
        96
    """
    longest = int(lengths.max()) if lengths.size else cap
    chosen = min(cap, -(-longest // ROUND_TO) * ROUND_TO)
    return {
        "max_length": chosen,
        "cap": cap,
        "pairs": int(lengths.size),
        "truncated_pairs": int((lengths > chosen).sum()),
        "tokens_p50": int(np.percentile(lengths, 50)) if lengths.size else 0,
        "tokens_p95": int(np.percentile(lengths, 95)) if lengths.size else 0,
        "tokens_max": longest if lengths.size else 0,
    }
