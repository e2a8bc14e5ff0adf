"""Cross-encoder losses, one per file, each a sentence-transformers-compatible loss module.

All take the same input: per query a group ``(query, [doc_1 .. doc_G])`` with graded labels
``[grade_1 .. grade_G]`` (see :func:`rerankforge.stages.train.build_groups`).
"""

from __future__ import annotations

from rerankforge.losses.lce import LCELoss
from rerankforge.losses.wasserstein import WassersteinLoss

LOSSES = {"lce": LCELoss, "wasserstein": WassersteinLoss}

__all__ = ["LOSSES", "LCELoss", "WassersteinLoss"]
