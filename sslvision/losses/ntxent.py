"""NT-Xent, the normalised temperature-scaled cross entropy of SimCLR.

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, equation (1):

    l(i, j) = -log( exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau) )

averaged over all 2N anchors of a batch of N pairs, sim being the cosine similarity. Negatives are
the other 2(N-1) views of the batch; with several processes they are gathered from every process
with the gradient flowing back, so 2 processes x N samples give the loss of 1 process x 2N.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslvision.nn.distributed import gather_with_grad, rank
from sslvision.nn.precision import at_least_float32


@dataclass
class TwoViewLogits:
    """The similarity layout NT-Xent and its variants share (DCL, SupCon).

    ``logits`` (2n, 2 * total): each local view (view a of the n local samples, then view b)
    against every view of the global batch (view a of all ``total`` samples, then view b), as
    cosine / temperature. ``self_index`` and ``positive_index`` give, for each row, the column of
    the anchor itself and of its other view.
    """

    logits: Tensor
    self_index: Tensor
    positive_index: Tensor
    total: int


def two_view_logits(z_a: Tensor, z_b: Tensor, temperature: float, loss: str) -> TwoViewLogits:
    """Normalise two views of n samples, gather them from every process with the gradient
    flowing back, and lay out the logits of the local anchors against all views."""
    if z_a.shape != z_b.shape:
        raise ValueError(f"{loss} needs two views of equal shape, got {z_a.shape} and {z_b.shape}")
    n = z_a.shape[0]
    z_local = F.normalize(at_least_float32(torch.cat([z_a, z_b])), dim=1)
    all_a = gather_with_grad(z_local[:n])
    all_b = gather_with_grad(z_local[n:])
    total = all_a.shape[0]
    candidates = torch.cat([all_a, all_b])  # (2 * total, d)
    logits = z_local @ candidates.T / temperature  # (2n, 2 * total)
    local = torch.arange(n, device=z_a.device) + rank() * n
    self_index = torch.cat([local, local + total])
    positive_index = torch.cat([local + total, local])
    return TwoViewLogits(logits, self_index, positive_index, total)


def nt_xent(z_a: Tensor, z_b: Tensor, temperature: float = 0.1) -> Tensor:
    """NT-Xent of two batches of projections whose rows ``i`` are positive pairs.

    >>> z = torch.randn(8, 16)
    >>> float(nt_xent(z, z, temperature=0.1)) < float(nt_xent(z, torch.randn(8, 16)))
    True
    """
    layout = two_view_logits(z_a, z_b, temperature, "NT-Xent")
    logits = layout.logits
    rows = torch.arange(logits.shape[0], device=logits.device)
    logits[rows, layout.self_index] = float("-inf")
    return F.cross_entropy(logits, layout.positive_index)


class NTXentLoss(nn.Module):
    """Module form of :func:`nt_xent` with a fixed temperature."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return nt_xent(z_a, z_b, self.temperature)
