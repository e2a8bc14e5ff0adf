"""Labelled evaluation's IR metrics and its paired two-sided significance test, from ranx: nDCG@k, MRR@k, MAP,
Recall@k (a loss is reported as well as a gain). The per-list arithmetic lives in :mod:`rerankforge.ranking`.

Example:
    >>> qrels = {"q1": {"d1": 1, "d3": 2}, "q2": {"d2": 1}}
    >>> runs = {"a": {"q1": {"d1": 0.9, "d2": 0.8, "d3": 0.1}, "q2": {"d1": 0.5, "d2": 0.4}}}
    >>> scores = score_runs(qrels, runs, ["ndcg@10", "mrr@10"], baseline="a")
    >>> round(scores.means["a"]["mrr@10"], 4)
    0.75
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

from rerankforge.errors import MissingDependencyError

Run = dict[str, dict[str, float]]


def metric_names(k: int, recall_k: tuple[int, ...]) -> list[str]:
    """The metrics every labelled evaluation reports."""
    return [f"ndcg@{k}", f"mrr@{k}", "map", *(f"recall@{r}" for r in recall_k)]


@dataclass
class RunScores:
    """Mean and per-query metrics of each system, and each system's paired t-test against the baseline."""

    means: dict[str, dict[str, float]]
    per_query: dict[str, dict[str, dict[str, float]]]  # system -> metric -> query_id -> value
    p_values: dict[str, dict[str, float]]  # system -> metric -> p (two-sided paired t-test vs the baseline)
    win_tie_loss: dict[str, dict[str, dict[str, int]]]  # system -> metric -> {"W", "T", "L"} vs the baseline

    def as_dict(self) -> dict[str, Any]:
        return {
            "means": self.means,
            "p_values": self.p_values,
            "win_tie_loss": self.win_tie_loss,
        }


def score_runs(qrels: dict[str, dict[str, int]], runs: dict[str, Run], metrics: list[str], baseline: str) -> RunScores:
    """Evaluate every run on ``qrels`` with ranx and compare each with ``baseline`` (Student's paired t-test).

    A query a run returns nothing for scores 0 on it (ranx's ``make_comparable``).
    """
    try:
        from ranx import Qrels, compare
        from ranx import Run as RanxRun
    except ImportError as exc:
        raise MissingDependencyError("ranx", "eval", "Labelled evaluation") from exc
    ranx_qrels = Qrels(qrels)
    ranx_runs = []
    for name, run in runs.items():
        ranx_run = RanxRun({q: docs for q, docs in run.items() if docs}, name=name)
        ranx_runs.append(ranx_run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's type-safety notices about ranx's own casts
        report = compare(ranx_qrels, ranx_runs, metrics, stat_test="student", make_comparable=True, max_p=1.0)
    data = report.to_dict()
    names = list(runs)
    means = {name: {m: float(data[name]["scores"][m]) for m in metrics} for name in names}
    per_query = {run.name: {m: {q: float(v) for q, v in run.scores[m].items()} for m in metrics} for run in ranx_runs}
    others = [n for n in names if n != baseline]
    # identical per-query scores make the t statistic 0/0: no evidence of a difference, p = 1
    p_values = {n: {m: _p(data[n]["comparisons"][baseline][m]) for m in metrics} for n in others}
    win_tie_loss = {n: {m: dict(data[n]["win_tie_loss"][baseline][m]) for m in metrics} for n in others}
    return RunScores(means=means, per_query=per_query, p_values=p_values, win_tie_loss=win_tie_loss)


def _p(value: float) -> float:
    return 1.0 if math.isnan(float(value)) else float(value)
