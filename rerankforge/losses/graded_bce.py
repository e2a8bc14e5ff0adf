"""Graded binary cross-entropy (BiXSE, 2025): point-wise BCE with the LLM grade as a soft probability target.

For every (query, document) pair of a group with grade g on the 0..G_max scale and model logit s:

    y = g / G_max                         (grade 0 -> 0.0, grade 3 -> 1.0 on the default scale)
    L = -[ y log sigmoid(s / tau) + (1 - y) log(1 - sigmoid(s / tau)) ]      (mean over pairs)

Unlike LCE, middle grades are used as they are: a grade-2 passage pulls its score towards 0.67.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rerankforge.losses.base import GroupLoss

MAX_GRADE = 3.0


class GradedBCELoss(GroupLoss):
    """BCE on every pair of the groups, the target being ``grade / 3``.

    Example:
        >>> import torch
        >>> loss = GradedBCELoss.__new__(GradedBCELoss); loss.temperature = 1.0
        >>> round(float(loss.group_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 0.0]]))), 4)
        0.6931
    """

    def group_loss(self, scores: Tensor, grades: Tensor) -> Tensor:
        target = (grades / MAX_GRADE).clamp(0.0, 1.0)
        return F.binary_cross_entropy_with_logits(scores / self.temperature, target)
