"""PixPro's pixel-to-propagation consistency loss.

Xie, Lin, Zhang, Cao, Lin, Hu, "Propagate Yourself: Exploring Pixel-Level Consistency for
Unsupervised Visual Representation Learning", CVPR 2021, equation (5):

    L_PixPro = -cos(y_i, x'_j) - cos(y_j, x'_i)

for every positive pair (i, j) of cells of the two views (normalised distance below a threshold,
eq. 1; see :mod:`sslvision.nn.correspondence`), where y is the propagated online feature
(:mod:`sslvision.nn.propagation`) and x' the momentum encoder's pixel feature, a constant for the
gradient. :func:`pixpro_loss` is one direction, y of one view against x' of the other; the method
adds the direction with the views swapped. As in the authors' code, each image's cosines are
averaged over its own positive pairs and the images are then averaged, an image whose views share
no cell counting as 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sslvision.nn.precision import at_least_float32


def pixpro_loss(propagated: Tensor, target: Tensor, positive: Tensor) -> Tensor:
    """Minus the mean cosine between ``propagated`` cells and their positive ``target`` cells.

    ``propagated`` (N, C, h_a, w_a) is y of view a, ``target`` (N, C, h_b, w_b) is x' of view b
    (detached here), ``positive`` (N, S_a, S_b) marks the positive pairs of row-major cells.

    >>> y = torch.randn(2, 4, 2, 2)
    >>> itself = torch.eye(4, dtype=torch.bool).expand(2, 4, 4)
    >>> round(float(pixpro_loss(y, 3 * y, itself)), 6), round(float(pixpro_loss(y, -y, itself)), 6)
    (-1.0, 1.0)
    """
    n, c = propagated.shape[:2]
    s_a, s_b = propagated[0, 0].numel(), target[0, 0].numel()
    if target.shape[:2] != (n, c) or positive.shape != (n, s_a, s_b):
        raise ValueError(
            f"PixPro needs propagated (N, C, ...) and target maps of one batch and width and a "
            f"positive mask (N, S_a, S_b); got {tuple(propagated.shape)}, {tuple(target.shape)} "
            f"and {tuple(positive.shape)}"
        )
    y = F.normalize(at_least_float32(propagated.flatten(2)), dim=1)  # (N, C, S_a)
    x = F.normalize(at_least_float32(target.detach().flatten(2)), dim=1)  # (N, C, S_b)
    cosine = torch.bmm(y.transpose(1, 2), x)  # (N, S_a, S_b)
    mask = positive.to(cosine.dtype)
    # clamp: an image without positive pairs contributes 0 / 1 = 0.
    per_image = (cosine * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp(min=1.0)
    return -per_image.mean()
