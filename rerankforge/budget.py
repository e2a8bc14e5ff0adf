"""A build's time budget: its whole wall time, of which query writing gets what the other stages leave.

The queries stage writes in rounds and, before each, asks whether one more round and everything after it
still fit: the time spent since the build started, plus a round at the rate this build's own calls showed,
plus :func:`seconds_after_queries` for the kept queries. Those later stages run at rates measured on a
2-core machine (``benchmarks/RESULTS.md``: a q600 build of MedQuAD), so on a faster machine the estimate errs
on the safe side. The learning curve below is the real-question gain that LLM time bought there: a guide to
what a budget buys, not a promise for another corpus.

Example:
    >>> parse_duration("1h30m")
    5400.0
    >>> parse_duration("45s")
    45.0
"""

from __future__ import annotations

import re

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?(?:(\d+(?:\.\d+)?)s)?")

# Seconds the stages after query writing took per unit on 2 cores (the q600 build of MedQuAD, RESULTS.md):
SECONDS_FIXED = 120.0  # model loads, the mine stage's index of the already embedded chunks, export, the report
SECONDS_PER_CHUNK = 0.002  # the mine stage's Qdrant index, per chunk (its vectors are cached by then)
SECONDS_PER_KEPT_QUERY = 0.55  # tuning (211 s for 766) and the held-out evaluation (70 s for 255) per kept query
KEPT_SHARE = 0.57  # of the written queries the filters keep: 1,021 of 1,800 (q600) and 501 of 900 (q300)
GRADE_CALL_SHARE = 0.3  # a grading call (short answer) against a query-writing call: 1.4 s against 5.65 s measured
# A cross-encoder of MiniLM-L6's size, where one is trained (two CancerGov builds with a pretrained reranker, 230
# kept queries, 4 epochs, a quiet 2-core machine, RESULTS.md): its training per kept query and epoch (train 897 s
# and 848 s, of which the first stage's four tunings about 330), the evaluate stage's scoring per kept query (the
# tuned and the brought reranker on the held-out lists: 162 s and 159 s, of which the first stage's about 60), and
# its export (ONNX, int8 and OpenVINO variants with their parity and speed checks: 120 s and, on another such
# build, 162 s). Each rounded up by about a quarter. An earlier build on a machine shared with test runs took
# twice as long (1,932 s, 378 s and 486 s for 358 kept queries), which this plan would underestimate.
# Each more tuning of the first stage (train.first_stage_folds > 1): about as long as the first one (0.28 s per
# kept query in the q600 build: it trains on most of the kept queries), and its fold's held-out lists.
FIRST_STAGE_FOLD_SECONDS_PER_KEPT = 0.3
# They run only where the held-out queries alone show no gain. Every measured build with 125 or more held-out
# queries (a quarter of 500 kept) decided on them alone; those below (55 to 90) missed real gains of +0.010 and
# +0.046 (RESULTS.md). So a plan counts the folds' time only below this many kept queries; a larger build that
# needs them anyway runs over its budget by their time.
FOLDS_PLANNED_BELOW_KEPT = 500
CE_SECONDS_PER_KEPT_EPOCH = 0.75
CE_EVALUATE_SECONDS_PER_KEPT = 0.6
CE_EXPORT_SECONDS = 200.0

# (training queries, nDCG@10 gain over dense) on 500 real MedQuAD questions, fresh builds under the recipe of
# their day (the first stage's negatives from the source file first, the default until 2026-12-07):
# two small whole-corpus builds (134 training queries: +0.005 served; 165: -0.005, it lost on each of the three
# sources) pooled to their mean at 150, q300 (376), q600 (766: +0.061) and a bare build with the default 2-hour
# budget (904: +0.052); the last two are pooled to their mean too, so that the curve never falls (their
# difference is within one build's noise). Subsets of q300's queries had gained at 94 and 188; fresh small
# builds did not, so the curve starts at them.
LEARNING_CURVE = ((150, 0.0), (376, 0.030), (766, 0.0565), (904, 0.0565))
# A bare build with the default 2h budget and today's defaults (2026-12-07, rank-order negatives, a quiet 2-core
# machine): its training queries and measured gain, which the build's closing line cites. It sits on the flat part
# of the curve above (+0.0565), within one build's noise.
DEFAULT_BUILD = (1355, 0.0545)


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``text``: ``2h``, ``90m``, ``1h30m``, ``45s``, or a plain number of seconds.

    Raises:
        ValueError: for anything else, with the forms it takes.
    """
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        value = text.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", value):
            seconds = float(value)
        else:
            match = _DURATION.fullmatch(value)
            if not value or match is None or not any(match.groups()):
                raise ValueError(f"{text!r} is not a duration: write e.g. 2h, 90m, 1h30m or 45s")
            seconds = sum(float(g) * _UNITS[u] for g, u in zip(match.groups(), "hms", strict=True) if g)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def seconds_per_kept_query(cross_encoder_epochs: float | None = None, first_stage_folds: int = 1) -> float:
    """Training and evaluation time per kept query: the first stage's (its ``first_stage_folds`` - 1 more tunings
    included), and a cross-encoder's trained for ``cross_encoder_epochs`` (None: none is trained)."""
    first = SECONDS_PER_KEPT_QUERY + FIRST_STAGE_FOLD_SECONDS_PER_KEPT * (first_stage_folds - 1)
    if cross_encoder_epochs is None:
        return first
    return first + CE_SECONDS_PER_KEPT_EPOCH * cross_encoder_epochs + CE_EVALUATE_SECONDS_PER_KEPT


def seconds_after_queries(
    kept: int,
    chunks: int,
    grade_pairs_per_query: int,
    seconds_per_grade: float,
    cross_encoder_epochs: float | None = None,
    first_stage_folds: int = 1,
) -> float:
    """The time the stages after query writing will take: mine, grade, train, evaluate and export (with a
    cross-encoder trained for ``cross_encoder_epochs``, its training, scoring and export too; with
    ``first_stage_folds`` > 1, the first stage's more tunings)."""
    grading = kept * grade_pairs_per_query * seconds_per_grade
    fixed = SECONDS_FIXED + (CE_EXPORT_SECONDS if cross_encoder_epochs is not None else 0.0)
    per_kept = seconds_per_kept_query(cross_encoder_epochs, first_stage_folds)
    return fixed + SECONDS_PER_CHUNK * chunks + per_kept * kept + grading


def expected_gain(training_queries: float) -> float:
    """The real-question gain the measured learning curve gives for this many training queries (linear between
    its points, flat past the last one: more was never measured there).

    Example:
        >>> round(expected_gain(904), 4)
        0.0565
    """
    points = [(0.0, 0.0), *LEARNING_CURVE]
    for (n0, g0), (n1, g1) in zip(points, points[1:], strict=False):
        if training_queries <= n1:
            return g0 + (g1 - g0) * (training_queries - n0) / (n1 - n0)
    return points[-1][1]
