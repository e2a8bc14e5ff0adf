"""Ranking arithmetic shared by training, evaluation and serving: nDCG and MRR of a ranked list, a list ranked
by its scores, the paired one-sided t-test that every "is it better?" decision of a build uses, and the cosine
scale of the first stage.

numpy only (scipy is imported for the t-test alone).

Example:
    >>> round(ndcg_of_scores([1, 0, 0], [0.1, 0.9, 0.5], k=10), 4)
    0.5
    >>> significant_gain([1.0] * 12, [0.5] * 12, 0.05), significant_gain([1.0, 0.5], [0.5, 0.6], 0.05)
    (True, False)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SCALE = 20.0  # cosine scale of the bi-encoder's training loss, and the first stage's weight in a served score


def ndcg_at_k(ranked_grades: Sequence[float], k: int) -> float:
    """nDCG@k with linear gains, for grades in ranked order (the ideal is the same grades sorted).

    Example:
        >>> round(ndcg_at_k([0, 3, 1], k=10), 4)
        0.659
    """

    def dcg(grades: Sequence[float]) -> float:
        return sum(g / math.log2(i + 2) for i, g in enumerate(grades[:k]))

    ideal = dcg(sorted(ranked_grades, reverse=True))
    return dcg(ranked_grades) / ideal if ideal > 0 else 0.0


def mrr_at_k(ranked_grades: Sequence[float], k: int, relevant_min: float) -> float:
    """Reciprocal rank of the first relevant item within the top k, else 0.

    Example:
        >>> mrr_at_k([0, 1, 3], k=10, relevant_min=2)
        0.3333333333333333
    """
    for i, grade in enumerate(ranked_grades[:k]):
        if grade >= relevant_min:
            return 1.0 / (i + 1)
    return 0.0


def ranked(grades: Sequence[float], scores: Sequence[float] | np.ndarray) -> list[float]:
    """``grades`` in the order of ``scores``, best first (ties keep the list's order)."""
    return [grades[i] for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")]


def ndcg_of_scores(grades: Sequence[float], scores: Sequence[float] | np.ndarray, k: int) -> float:
    """nDCG@k of the candidates (with ``grades``, in any order) ordered by ``scores``."""
    return ndcg_at_k(ranked(grades, scores), k)


def one_sided_p(system: Sequence[float], baseline: Sequence[float]) -> float | None:
    """p of the paired one-sided t-test that ``system`` beats ``baseline`` per query; None when it is undefined
    (fewer than two queries, or every query differs by the same amount).

    One-sided, because a build asks only "does this part help?": it serves a part only on a gain. The labelled
    evaluation (:mod:`rerankforge.evaluation.metrics`, ranx) is two-sided, because it reports a loss as well.
    """
    diffs = np.asarray(system, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if diffs.size < 2 or np.all(diffs == diffs[0]):
        return None
    from scipy.stats import ttest_1samp

    return float(ttest_1samp(diffs, 0.0, alternative="greater").pvalue)


def significant_gain(system: Sequence[float], baseline: Sequence[float], p_value: float) -> bool:
    """True when ``system`` beats ``baseline`` per query with :func:`one_sided_p` below ``p_value``; with no
    variance in the differences, when every query gains (t is infinite)."""
    diffs = np.asarray(system, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if diffs.size < 2 or not np.any(diffs > 0):
        return False
    p = one_sided_p(system, baseline)
    return bool(diffs[0] > 0) if p is None else p < p_value
