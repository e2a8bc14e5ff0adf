"""Localized Contrastive Estimation (Gao, Dai & Callan, 2021, "Rethink Training of BERT Rerankers").

Per query a group of one positive and G-1 hard negatives from the first stage's top-k:

    L = -log( exp(s_pos / tau) / sum_j exp(s_j / tau) )

i.e. softmax cross-entropy over the group with the positive (the highest grade) as the target.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rerankforge.losses.base import GroupLoss


class LCELoss(GroupLoss):
    """LCE over groups ``(query, [pos, neg_1, ..., neg_{G-1}])``; the target is each group's top grade.

    Example:
        >>> import torch
        >>> loss = LCELoss.__new__(LCELoss); loss.temperature = 1.0
        >>> round(float(loss.group_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([[3.0, 0.0]]))), 4)
        0.1269
    """

    def group_loss(self, scores: Tensor, grades: Tensor) -> Tensor:
        target = grades.argmax(dim=1)
        return F.cross_entropy(scores / self.temperature, target)
