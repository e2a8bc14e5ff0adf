"""Shared plumbing of the list-wise losses: score every (query, doc) pair of a batch of equal-size groups."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class GroupLoss(nn.Module):
    """Base of losses over groups of equal size G. Subclasses implement :meth:`group_loss`."""

    def __init__(self, model: Any, temperature: float = 1.0) -> None:
        super().__init__()
        if getattr(model, "num_labels", 1) != 1:
            raise ValueError(f"{type(self).__name__} needs a CrossEncoder with one output label")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.temperature = temperature

    def forward(
        self, inputs: list[Any], labels: list[Tensor], prompt: str | None = None, task: str | None = None
    ) -> Tensor:
        queries, docs_list = inputs
        sizes = {len(docs) for docs in docs_list}
        if len(sizes) != 1:
            raise ValueError(f"{type(self).__name__} needs groups of equal size, got sizes {sorted(sizes)}")
        group = sizes.pop()
        pairs = [(query, doc) for query, docs in zip(queries, docs_list, strict=True) for doc in docs]
        tokens = self.model.preprocess(pairs, prompt=prompt, task=task)
        tokens = {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in tokens.items()}
        scores = self.model(tokens)["scores"].view(len(queries), group).float()
        grades = torch.stack([torch.as_tensor(lbl, dtype=torch.float32) for lbl in labels]).to(scores.device)
        return self.group_loss(scores, grades)

    def group_loss(self, scores: Tensor, grades: Tensor) -> Tensor:
        """``scores`` and ``grades`` are (batch, G); return a scalar."""
        raise NotImplementedError

    def get_config_dict(self) -> dict[str, float]:
        return {"temperature": self.temperature}
