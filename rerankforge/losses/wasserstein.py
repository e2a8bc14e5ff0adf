"""List-wise Wasserstein loss over graded groups (SyCL: Esfandiarpoor, Zerveas et al., 2025).

For a batch of B groups of G documents with LLM grades g and model scores s:

    T = softmax(g)          (B x G, target distribution per group)
    P = softmax(s / tau)    (B x G, predicted distribution per group)

Fit a Gaussian to the rows of P and one to the rows of T (means mu_P, mu_T in R^G, covariances
Sigma_P, Sigma_T over the batch) and take the squared 2-Wasserstein distance between them, in closed form:

    W2^2 = ||mu_P - mu_T||^2 + Tr(Sigma_P) + Tr(Sigma_T) - 2 Tr( (Sigma_T^1/2 Sigma_P Sigma_T^1/2)^1/2 )

Computed in float64. Sigma_T^1/2 comes from an eigendecomposition of the (constant) target covariance;
the last trace is the sum of square roots of the eigenvalues of a symmetric PSD matrix (``eigvalsh``, whose
gradient never divides by eigenvalue gaps), with a square root that is linear below ``eps`` so gradients
stay finite at the rank-deficient covariances a small batch gives.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rerankforge.losses.base import GroupLoss


def _safe_sqrt(x: Tensor, eps: float) -> Tensor:
    """sqrt(x) for x >= eps, continued linearly (x / sqrt(eps)) below: finite gradient at 0."""
    x = x.clamp(min=0.0)
    return torch.where(x > eps, x.clamp(min=eps).sqrt(), x / eps**0.5)


def _covariance(x: Tensor) -> Tensor:
    centered = x - x.mean(dim=0, keepdim=True)
    return centered.T @ centered / x.shape[0]


def gaussian_w2(p: Tensor, t: Tensor, eps: float = 1e-10) -> Tensor:
    """Squared 2-Wasserstein distance between Gaussians fitted to the rows of ``p`` and of ``t``."""
    p, t = p.double(), t.double()
    mean_term = (p.mean(dim=0) - t.mean(dim=0)).pow(2).sum()
    cov_p, cov_t = _covariance(p), _covariance(t)
    with torch.no_grad():
        values, vectors = torch.linalg.eigh(cov_t)
        sqrt_t = vectors @ torch.diag(_safe_sqrt(values, eps)) @ vectors.T
    middle = sqrt_t @ cov_p @ sqrt_t
    middle = (middle + middle.T) / 2  # exact symmetry for eigvalsh
    cross = _safe_sqrt(torch.linalg.eigvalsh(middle), eps).sum()
    return (mean_term + torch.trace(cov_p) + torch.trace(cov_t) - 2 * cross).clamp(min=0.0)


class WassersteinLoss(GroupLoss):
    """SyCL's Wasserstein list loss over graded groups ``(query, [doc_1..doc_G])`` with grades as labels.

    Example:
        >>> import torch
        >>> p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
        >>> float(gaussian_w2(p, p)) < 1e-12
        True
    """

    def group_loss(self, scores: Tensor, grades: Tensor) -> Tensor:
        target = torch.softmax(grades.double(), dim=1)
        predicted = torch.softmax(scores.double() / self.temperature, dim=1)
        return gaussian_w2(predicted, target).float()
