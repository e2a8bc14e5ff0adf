"""Metrics (ranx) on a case computed by hand, the paired test, and BM25 on a tiny corpus."""

from __future__ import annotations

import math

import pytest

from rerankforge.evaluation.first_stage import bm25_search
from rerankforge.evaluation.metrics import metric_names, score_runs

# q1: d1 (grade 1) and d3 (grade 2) are relevant; ranked d1, d2, d3.   q2: d2 (grade 1); ranked d1, d2.
QRELS = {"q1": {"d1": 1, "d3": 2}, "q2": {"d2": 1}}
FIRST = {"q1": {"d1": 0.9, "d2": 0.8, "d3": 0.1}, "q2": {"d1": 0.5, "d2": 0.4}}
BEST = {"q1": {"d3": 0.9, "d1": 0.8, "d2": 0.1}, "q2": {"d2": 0.5, "d1": 0.4}}


def test_metrics_match_the_hand_computed_values() -> None:
    scores = score_runs(QRELS, {"first": FIRST}, ["ndcg@10", "mrr@10", "map", "recall@2"], baseline="first")
    # q1: DCG = 1/log2(2) + 2/log2(4) = 2; ideal = 2/log2(2) + 1/log2(3) = 2.6309; q2: DCG = 1/log2(3), ideal 1
    ndcg_q1 = 2 / (2 + 1 / math.log2(3))
    ndcg_q2 = 1 / math.log2(3)
    per_query = scores.per_query["first"]
    assert per_query["ndcg@10"]["q1"] == pytest.approx(ndcg_q1)  # 0.7602
    assert per_query["ndcg@10"]["q2"] == pytest.approx(ndcg_q2)  # 0.6309
    means = scores.means["first"]
    assert means["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2)  # 0.6956
    assert means["mrr@10"] == pytest.approx((1 + 1 / 2) / 2)  # 0.75
    # AP q1 = (1/1 + 2/3) / 2 = 0.8333; AP q2 = 1/2
    assert means["map"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)  # 0.6667
    # recall@2: q1 finds 1 of 2 relevant in its top 2, q2 finds 1 of 1
    assert means["recall@2"] == pytest.approx((0.5 + 1.0) / 2)  # 0.75


def test_the_perfect_ranking_wins_every_query_and_the_paired_test_is_reported() -> None:
    scores = score_runs(QRELS, {"first": FIRST, "best": BEST}, ["ndcg@10", "mrr@10"], baseline="first")
    assert scores.means["best"]["ndcg@10"] == pytest.approx(1.0)
    assert scores.win_tie_loss["best"]["ndcg@10"] == {"W": 2, "T": 0, "L": 0}
    assert scores.win_tie_loss["best"]["mrr@10"] == {"W": 1, "T": 1, "L": 0}  # q1 already had its hit first
    # paired t-test on the per-query differences (0.2398, 0.3691): t = mean / (sd / sqrt(2)), 1 degree of freedom
    diffs = [1 - 2 / (2 + 1 / math.log2(3)), 1 - 1 / math.log2(3)]
    mean = sum(diffs) / 2
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs))
    t = mean / (sd / math.sqrt(2))
    expected_p = 1 - 2 * math.atan(t) / math.pi  # two-sided p of Student's t with 1 degree of freedom
    assert scores.p_values["best"]["ndcg@10"] == pytest.approx(expected_p, rel=1e-6)
    assert "first" not in scores.p_values  # the baseline is not compared with itself


def test_identical_systems_have_p_one_not_nan() -> None:
    scores = score_runs(QRELS, {"first": FIRST, "same": dict(FIRST)}, ["ndcg@10"], baseline="first")
    assert scores.p_values["same"]["ndcg@10"] == 1.0
    assert scores.win_tie_loss["same"]["ndcg@10"] == {"W": 0, "T": 2, "L": 0}


def test_a_query_without_results_scores_zero() -> None:
    scores = score_runs(QRELS, {"first": FIRST, "empty": {"q1": BEST["q1"], "q2": {}}}, ["ndcg@10"], baseline="first")
    assert scores.per_query["empty"]["ndcg@10"] == {"q1": pytest.approx(1.0), "q2": 0.0}


def test_metric_names() -> None:
    assert metric_names(10, (10, 50)) == ["ndcg@10", "mrr@10", "map", "recall@10", "recall@50"]


def test_bm25_ranks_the_document_that_shares_the_rare_term() -> None:
    corpus = {
        "a": "The CD-9 dock needs a 32 A breaker on a dedicated circuit.",
        "b": "Annual leave is 25 days per year for full-time staff.",
        "c": "The dock LED blinks amber during the self-test.",
    }
    run = bm25_search(corpus, {"q": "which breaker for the dock", "none": "zebra"}, k=3)
    assert list(run["q"])[0] == "a"
    assert "b" not in run["q"]  # shares no term with the query
    assert run["none"] == {}
