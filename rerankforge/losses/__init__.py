"""Cross-encoder losses, each a sentence-transformers-compatible loss module.

All take the same input: per query a group ``(query, [doc_1 .. doc_G])`` with graded labels
``[grade_1 .. grade_G]`` (see :func:`rerankforge.stages.train.build_groups`):

- ``lce``: Localized Contrastive Estimation, the positive against G-1 hard negatives (:mod:`.lce`);
- ``wasserstein``: SyCL's list-wise Wasserstein loss over graded groups (:mod:`.wasserstein`);
- ``bce``: point-wise BCE with ``grade / 3`` as the target, as in BiXSE (:mod:`.graded_bce`);
- ``listnet`` and ``lambda``: sentence-transformers' own ListNet and LambdaLoss (NDCG-Loss2++), list-wise
  baselines on the same groups.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from rerankforge.losses.graded_bce import GradedBCELoss
from rerankforge.losses.lce import LCELoss
from rerankforge.losses.wasserstein import WassersteinLoss

LOSSES = {"lce": LCELoss, "wasserstein": WassersteinLoss, "bce": GradedBCELoss}
LOSS_NAMES = ("lce", "wasserstein", "bce", "listnet", "lambda")


def make_loss(name: str, model: Any, temperature: float = 1.0) -> nn.Module:
    """The loss called ``name`` for ``model`` (a one-label CrossEncoder)."""
    if name in LOSSES:
        return LOSSES[name](model, temperature=temperature)
    if name == "listnet":
        from sentence_transformers.cross_encoder.losses import ListNetLoss

        return ListNetLoss(model)
    if name == "lambda":
        from sentence_transformers.cross_encoder.losses import LambdaLoss

        return LambdaLoss(model)
    raise ValueError(f"Unknown loss '{name}'. Choose one of: {', '.join(LOSS_NAMES)}.")


__all__ = ["LOSSES", "LOSS_NAMES", "GradedBCELoss", "LCELoss", "WassersteinLoss", "make_loss"]
