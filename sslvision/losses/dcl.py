"""Decoupled contrastive loss (DCL) and its weighted form (DCLW).

Yeh, Hong, Hsu, Liu, Chen, LeCun, "Decoupled Contrastive Learning", ECCV 2022, equation (6):

    L_i = -w_i sim(z_i, z_j) / tau + log sum_{k not in {i, j}} exp(sim(z_i, z_k) / tau)

This is NT-Xent (SimCLR eq. 1) with the positive pair taken out of the denominator, which removes
the negative-positive coupling that shrinks the gradient of easy positives in small batches. The
batch layout is that of :func:`sslvision.losses.ntxent.nt_xent`: 2N anchors, the negatives of an
anchor are the other 2(N-1) views, gathered from every process with the gradient flowing back.

DCL has w_i = 1. DCLW weights the positive term with the negative von Mises-Fisher weight

    w_i = 2 - exp(sim(z_i, z_j) / sigma) / E_batch[exp(sim(z_i', z_j') / sigma)]

(sigma = 0.5 in the paper), which puts more weight on the positive pairs that are further apart
than the batch average. The paper does not say whether w carries a gradient. We treat it as a
constant weight (computed without gradient), so that it only rescales the gradient of each
positive term, as the paper describes it; lightly's ``DCLWLoss`` does the same, while the
implementation in github.com/raminnakhli/Decoupled-Contrastive-Learning keeps the gradient.
The batch average runs over the global batch (all processes), so that 2 processes x N samples
give the loss of 1 process x 2N; both of those implementations average over the local batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sslvision.losses.ntxent import two_view_logits
from sslvision.nn.distributed import gather_no_grad


@torch.no_grad()
def _von_mises_fisher_weights(positive_cosine: Tensor, sigma: float) -> Tensor:
    """DCLW's ``2 - exp(s_i / sigma) / mean_j exp(s_j / sigma)``, the mean over all processes.

    Written as ``2 - exp(s_i / sigma - logmeanexp(s / sigma))`` so that a small sigma cannot
    overflow ``exp``.
    """
    all_cosine = gather_no_grad(positive_cosine) / sigma
    log_mean = torch.logsumexp(all_cosine, dim=0) - math.log(all_cosine.numel())
    return 2 - torch.exp(positive_cosine / sigma - log_mean)


def dcl(
    z_a: Tensor, z_b: Tensor, temperature: float = 0.1, weight_sigma: float | None = None
) -> Tensor:
    """DCL (eq. 6) of two batches of projections whose rows ``i`` are positive pairs.

    ``weight_sigma=None`` gives DCL; a float gives DCLW with that sigma, the weight held constant
    for the gradient. Needs at least 2 samples over all processes (an anchor needs a negative).

    >>> from sslvision.losses.ntxent import nt_xent
    >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
    >>> bool(dcl(z_a, z_b) < nt_xent(z_a, z_b))
    True
    """
    layout = two_view_logits(z_a, z_b, temperature, "DCL")
    if layout.total < 2:
        raise ValueError(f"DCL needs at least 2 samples over all processes, got {layout.total}")
    logits, positive_index = layout.logits, layout.positive_index
    rows = torch.arange(logits.shape[0], device=logits.device)
    positive_logit = logits[rows, positive_index]
    excluded = torch.zeros_like(logits, dtype=torch.bool)
    excluded[rows, layout.self_index] = True
    excluded[rows, positive_index] = True
    negative_term = torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1)

    if weight_sigma is not None:
        n = z_a.shape[0]
        positive_cosine = logits[rows[:n], positive_index[:n]].detach() * temperature
        weights = _von_mises_fisher_weights(positive_cosine, weight_sigma)
        positive_logit = positive_logit * torch.cat([weights, weights])
    return (negative_term - positive_logit).mean()


class DCLLoss(nn.Module):
    """Module form of :func:`dcl`: DCL, or DCLW when ``weight_sigma`` is given."""

    def __init__(self, temperature: float = 0.1, weight_sigma: float | None = None) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if weight_sigma is not None and weight_sigma <= 0:
            raise ValueError(f"weight_sigma must be positive or None, got {weight_sigma}")
        self.temperature = temperature
        self.weight_sigma = weight_sigma

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return dcl(z_a, z_b, self.temperature, self.weight_sigma)
