"""Score fusion of the reranker with the first stage: safe by construction.

    fused = alpha * minmax(reranker scores) + (1 - alpha) * minmax(first-stage scores)     (per query)

``alpha`` is chosen on the held-out synthetic queries; ``alpha = 0`` is the first stage's own order, so
the chosen fusion is never worse than the first stage on those queries, and an alpha above 0 needs a
significant gain there (:func:`rerankforge.ranking.significant_gain`). numpy only at serving time.

Example:
    >>> int(fuse([2.0, 0.0, 1.0], [0.1, 0.9, 0.5], alpha=1.0).argmax())
    0
    >>> int(fuse([2.0, 0.0, 1.0], [0.1, 0.9, 0.5], alpha=0.0).argmax())
    1
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rerankforge.ranking import significant_gain

ALPHAS = tuple(round(a / 10, 1) for a in range(11))


def minmax(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Scale one query's scores to [0, 1]; a constant list becomes all zeros."""
    x = np.asarray(scores, dtype=np.float64)
    if x.size == 0:
        return x
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def fuse(reranker: Sequence[float], first_stage: Sequence[float], alpha: float) -> np.ndarray:
    if len(reranker) != len(first_stage):
        raise ValueError(f"{len(reranker)} reranker scores but {len(first_stage)} first-stage scores")
    return alpha * minmax(reranker) + (1 - alpha) * minmax(first_stage)


def choose_alpha(
    queries: Sequence[tuple[Sequence[float], Sequence[float], Sequence[float]]],
    metric: Callable[[list[float]], float],
    p_value: float | None = 0.05,
) -> tuple[float, dict[float, float]]:
    """The alpha in 0.0..1.0 with the best mean ``metric`` over queries of (grades, reranker, first stage).

    ``metric`` takes grades in ranked order. Ties go to the smaller alpha (closer to the first stage). With
    ``p_value``, an alpha above 0 is chosen only when its gain over the first stage is significant (paired,
    one-sided t-test over the queries): a gain on a few noisy held-out queries is no reason to leave the
    first stage's order.
    """
    means: dict[float, float] = {}
    per_query: dict[float, list[float]] = {}
    for alpha in ALPHAS:
        values = []
        for grades, reranker, first_stage in queries:
            order = np.argsort(-fuse(reranker, first_stage, alpha), kind="stable")
            values.append(metric([grades[i] for i in order]))
        per_query[alpha] = values
        means[alpha] = float(np.mean(values)) if values else 0.0
    best = max(ALPHAS, key=lambda a: (round(means[a], 10), -a))
    if p_value is not None and best > 0 and not significant_gain(per_query[best], per_query[0.0], p_value):
        return 0.0, means
    return best, means
