"""Evaluation on labelled queries: label files, first stages (BM25, dense), ranx metrics and significance."""

from __future__ import annotations

from rerankforge.evaluation.labelled import (
    LABELLED_RESULT,
    LabelledEvalSpec,
    evaluate_labelled,
    run_labelled_evaluation,
    save_labelled_result,
)
from rerankforge.evaluation.labels import LabelError, LabelledData, load_corpus, load_labels
from rerankforge.evaluation.scorers import Scorer, load_scorer

__all__ = [
    "LABELLED_RESULT",
    "LabelError",
    "LabelledData",
    "LabelledEvalSpec",
    "Scorer",
    "evaluate_labelled",
    "load_corpus",
    "load_labels",
    "load_scorer",
    "run_labelled_evaluation",
    "save_labelled_result",
]
