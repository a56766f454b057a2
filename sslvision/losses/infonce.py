"""InfoNCE of MoCo: a query against its key and a queue of negatives, or against a batch of keys.

He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020, equation (1) (unchanged in Chen, Fan, Girshick, He, "Improved Baselines with Momentum
Contrastive Learning", 2020, MoCo v2):

    L_q = -log( exp(q . k_+ / tau) / (exp(q . k_+ / tau) + sum_{i=1}^{K} exp(q . k_i / tau)) )

with q and k_+ L2-normalised and the K negatives k_i read from a queue of earlier keys.

Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021
(MoCo v3), Algorithm 1, drops the queue: each query is contrasted with the keys of the whole batch,
gathered from every process, its own key being the positive (:func:`batch_info_nce`).

Keys come from the momentum encoder and never receive a gradient, here or in the papers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslvision.nn.distributed import gather_no_grad, rank
from sslvision.nn.precision import at_least_float32


def info_nce(query: Tensor, key: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """MoCo v1/v2 InfoNCE (eq. 1): row ``i`` of ``key`` is the positive of row ``i`` of ``query``.

    ``negatives`` is the (K, d) queue of earlier keys, stored already L2-normalised; ``query`` and
    ``key`` are normalised here. Neither ``key`` nor ``negatives`` receives a gradient. The positive
    logit sits in column 0, so the target of every row is 0.

    >>> q, queue = torch.randn(4, 8), torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    >>> float(info_nce(q, q, queue, 0.2)) < float(info_nce(q, -q, queue, 0.2))
    True
    """
    if query.shape != key.shape:
        raise ValueError(
            f"InfoNCE needs query and key of equal shape, got {query.shape} and {key.shape}"
        )
    if negatives.dim() != 2 or negatives.shape[1] != query.shape[1]:
        raise ValueError(
            f"InfoNCE needs negatives of shape (K, {query.shape[1]}), got {negatives.shape}"
        )
    q = F.normalize(at_least_float32(query), dim=1)
    k = F.normalize(at_least_float32(key.detach()), dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)  # (N, 1)
    negative = q @ at_least_float32(negatives.detach()).T  # (N, K)
    logits = torch.cat([positive, negative], dim=1) / temperature
    target = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, target)


def batch_info_nce(query: Tensor, key: Tensor, temperature: float) -> Tensor:
    """MoCo v3 InfoNCE (Algorithm 1): each query against the keys of the whole global batch.

    Keys are normalised and gathered from every process without gradient; the positive of local
    query ``i`` is the key at global row ``rank * N + i``. Returns the plain cross-entropy mean:
    MoCo v3 multiplies it by ``2 * temperature`` (Algorithm 1 and the authors' code); that factor
    is left to the caller.

    >>> q = torch.randn(4, 8)
    >>> float(batch_info_nce(q, q, 0.2)) < float(batch_info_nce(q, torch.randn(4, 8), 0.2))
    True
    """
    if query.shape != key.shape:
        raise ValueError(
            f"InfoNCE needs query and key of equal shape, got {query.shape} and {key.shape}"
        )
    n = query.shape[0]
    q = F.normalize(at_least_float32(query), dim=1)
    all_keys = gather_no_grad(F.normalize(at_least_float32(key.detach()), dim=1))
    logits = q @ all_keys.T / temperature  # (n, n * world_size)
    target = torch.arange(n, device=query.device) + rank() * n
    return F.cross_entropy(logits, target)


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce` with a fixed temperature."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature

    def forward(self, query: Tensor, key: Tensor, negatives: Tensor) -> Tensor:
        return info_nce(query, key, negatives, self.temperature)


class BatchInfoNCELoss(nn.Module):
    """Module form of :func:`batch_info_nce` with a fixed temperature (no ``2 * T`` factor)."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature

    def forward(self, query: Tensor, key: Tensor) -> Tensor:
        return batch_info_nce(query, key, self.temperature)
