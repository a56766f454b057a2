"""Supervised contrastive loss (SupCon), the ``L_out`` form.

Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan, "Supervised Contrastive
Learning", NeurIPS 2020, equation (2):

    L_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / tau) / sum_{a in A(i)} exp(z_i.z_a / tau) )

averaged over all 2N anchors (both views of N samples). A(i) is every view but the anchor itself,
P(i) the views in A(i) with the anchor's label, so it always holds the anchor's other view. The
average over positives sits outside the log, the form the paper finds to train better. Rows are
L2-normalised here, as the paper's z are. With several processes the views are gathered from every
process with the gradient flowing back, the labels without, and each process keeps its own
anchors, as in :func:`sslvision.losses.ntxent.nt_xent`; with distinct labels the two losses agree.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sslvision.losses.ntxent import two_view_logits
from sslvision.nn.distributed import gather_no_grad


def supcon(z_a: Tensor, z_b: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """SupCon (eq. 2) of two views ``z_a``, ``z_b`` of N samples with class ``labels`` (N,).

    >>> z_a = torch.randn(4, 16).repeat_interleave(2, dim=0)  # samples 2k and 2k + 1 are twins
    >>> z_b = z_a + torch.randn(4, 16).repeat_interleave(2, dim=0)
    >>> twin_labels = torch.arange(4).repeat_interleave(2)
    >>> bool(supcon(z_a, z_b, twin_labels) < supcon(z_a, z_b, torch.arange(8)))
    True
    """
    n = z_a.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"SupCon needs one label per sample, shape ({n},), got {labels.shape}")
    layout = two_view_logits(z_a, z_b, temperature, "SupCon")
    logits = layout.logits
    all_labels = gather_no_grad(labels)
    rows = torch.arange(2 * n, device=logits.device)
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[rows, layout.self_index] = True
    log_prob = torch.log_softmax(logits.masked_fill(is_self, float("-inf")), dim=1)

    anchor_labels = torch.cat([labels, labels])
    candidate_labels = torch.cat([all_labels, all_labels])
    is_positive = (anchor_labels[:, None] == candidate_labels[None, :]) & ~is_self
    # masked_fill, not a product: the self column holds -inf and -inf * 0 is NaN.
    positive_log_prob = log_prob.masked_fill(~is_positive, 0.0).sum(dim=1)
    return -(positive_log_prob / is_positive.sum(dim=1)).mean()


class SupConLoss(nn.Module):
    """Module form of :func:`supcon` with a fixed temperature."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, z_a: Tensor, z_b: Tensor, labels: Tensor) -> Tensor:
        return supcon(z_a, z_b, labels, self.temperature)
