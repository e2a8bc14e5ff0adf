"""Score fusion: per-query min-max normalisation, the two ends of alpha, and the choice of alpha."""

from __future__ import annotations

import numpy as np
import pytest

from rerankforge.fusion import ALPHAS, choose_alpha, fuse, minmax
from rerankforge.ranking import ndcg_at_k


def test_minmax_scales_to_unit_range_and_flattens_constants() -> None:
    assert minmax([2.0, 4.0, 3.0]).tolist() == [0.0, 1.0, 0.5]
    assert minmax([5.0, 5.0]).tolist() == [0.0, 0.0]
    assert minmax([]).size == 0


def test_fuse_is_the_reranker_at_one_and_the_first_stage_at_zero() -> None:
    reranker, first = [3.0, 1.0, 2.0], [0.2, 0.9, 0.5]
    assert np.argsort(-fuse(reranker, first, 1.0)).tolist() == [0, 2, 1]
    assert np.argsort(-fuse(reranker, first, 0.0)).tolist() == [1, 2, 0]
    # halfway: (1, 0, .5)/2 + (0, 1, 3/7)/2
    assert fuse(reranker, first, 0.5).tolist() == pytest.approx([0.5, 0.5, 0.5 * 0.5 + 0.5 * (0.3 / 0.7)])


def test_fuse_refuses_lists_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="3 reranker scores but 2 first-stage scores"):
        fuse([1, 2, 3], [1, 2], 0.5)


def test_choose_alpha_prefers_the_better_signal_and_never_loses_to_the_first_stage() -> None:
    # the reranker is right and the first stage wrong on 8 queries; both are right on 4
    queries = [([3, 0, 0], [5.0, 1.0, 0.0], [0.1, 0.9, 0.5])] * 8 + [([3, 0, 0], [2.0, 1.0, 0.0], [0.9, 0.5, 0.1])] * 4
    alpha, means = choose_alpha(queries, lambda g: ndcg_at_k(g, 10))
    assert alpha > 0.5 and means[alpha] == pytest.approx(1.0)
    assert set(means) == set(ALPHAS)
    # a reranker that is always wrong: alpha 0 (the first stage) is chosen
    wrong = [([3, 0, 0], [0.0, 1.0, 2.0], [0.9, 0.5, 0.1])]
    alpha, means = choose_alpha(wrong, lambda g: ndcg_at_k(g, 10))
    assert alpha == 0.0 and means[0.0] == pytest.approx(1.0)


def test_a_gain_on_a_few_noisy_queries_keeps_the_first_stage() -> None:
    right = ([3, 0, 0], [5.0, 1.0, 0.0], [0.1, 0.9, 0.5])  # the reranker fixes the first stage
    wrong = ([3, 0, 0], [0.0, 5.0, 1.0], [0.9, 0.5, 0.1])  # the reranker breaks a correct first stage
    noisy = [right, right, wrong]
    alpha, means = choose_alpha(noisy, lambda g: ndcg_at_k(g, 10))
    assert max(means.values()) > means[0.0]  # a better mean exists...
    assert alpha == 0.0  # ...but one query in three is lost: not significant
    alpha, _ = choose_alpha(noisy, lambda g: ndcg_at_k(g, 10), p_value=None)
    assert alpha > 0.0  # without the test, the better mean wins
