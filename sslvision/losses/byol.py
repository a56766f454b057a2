"""The normalised mean squared error of BYOL, between the online prediction and the target.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
NeurIPS 2020, equation (2):

    L = || q / ||q|| - z' / ||z'|| ||^2 = 2 - 2 <q, z'> / (||q|| ||z'||)

averaged over the batch. The target z' comes from the momentum (target) network and is a constant
for the gradient (the stop-gradient of the paper). BYOL symmetrises by adding the loss with the two
views swapped; that sum is left to the caller.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sslvision.nn.precision import at_least_float32


def normalized_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean over rows of the squared distance between the unit-normalised rows (2 - 2 cosine).

    ``target`` is detached: only ``prediction`` receives a gradient.

    >>> import torch
    >>> p = torch.randn(4, 8)
    >>> round(float(normalized_mse(p, 3 * p)), 6), round(float(normalized_mse(p, -p)), 6)
    (0.0, 4.0)
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"BYOL needs prediction and target of equal shape, got {prediction.shape} and "
            f"{target.shape}"
        )
    p = F.normalize(at_least_float32(prediction), dim=-1)
    z = F.normalize(at_least_float32(target.detach()), dim=-1)
    # The squared distance itself rather than 2 - 2 cos: exact 0 for equal directions.
    return (p - z).pow(2).sum(dim=-1).mean()


class NormalizedMSELoss(nn.Module):
    """Module form of :func:`normalized_mse`."""

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return normalized_mse(prediction, target)
