"""PixPro's pixel propagation module: each cell becomes a similarity-weighted sum of the others.

Xie, Lin, Zhang, Cao, Lin, Hu, "Propagate Yourself: Exploring Pixel-Level Consistency for
Unsupervised Visual Representation Learning", CVPR 2021, equations (3) and (4):

    y_i = sum_{j in Omega} s(x_i, x_j) . g(x_j),      s(x_i, x_j) = max(cos(x_i, x_j), 0) ** gamma

over all cells j of the same feature map. The sharpness ``gamma`` (2 in the paper) decides how
strongly the sum favours similar cells; ``g`` is a transform of ``transform_layers`` 1x1
convolutions (0: identity; the authors' recipe uses 1, a linear map). As in their code, each
g(x_j) is L2-normalised before the sum, so every cell contributes in proportion to its
similarity alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslvision.nn.heads import ConvHead

TRANSFORM_LAYERS = (0, 1, 2)


class PixelPropagation(nn.Module):
    """``y = PPM(x)`` for feature maps ``x`` of shape (N, dim, h, w); ``y`` has the same shape.

    >>> ppm = PixelPropagation(8, gamma=2.0, transform_layers=1)
    >>> ppm(torch.randn(2, 8, 3, 3)).shape
    torch.Size([2, 8, 3, 3])
    """

    def __init__(self, dim: int, gamma: float = 2.0, transform_layers: int = 1) -> None:
        super().__init__()
        if gamma <= 0:
            raise ValueError(f"the propagation sharpness gamma must be positive, got {gamma}")
        if transform_layers not in TRANSFORM_LAYERS:
            raise ValueError(
                f"the propagation transform has 0, 1 or 2 layers, got {transform_layers}"
            )
        self.gamma = gamma
        self.transform = (
            ConvHead(dim, dim, dim, num_layers=transform_layers)
            if transform_layers
            else nn.Identity()
        )

    def similarity(self, x: Tensor) -> Tensor:
        """``s(x_i, x_j)`` of eq. 4 for every pair of cells of each map: (N, S, S), S = h * w."""
        cells = F.normalize(x.flatten(2), dim=1)  # (N, C, S)
        cosine = torch.bmm(cells.transpose(1, 2), cells)
        weights = cosine.clamp(min=0.0)
        if self.gamma < 1:  # the power's gradient is infinite at 0
            weights = weights + 1e-6
        return weights.pow(self.gamma)

    def forward(self, x: Tensor) -> Tensor:
        values = F.normalize(self.transform(x).flatten(2), dim=1)  # g(x_j): (N, C, S)
        # y[:, :, i] = sum_j s[i, j] * values[:, :, j]
        propagated = torch.bmm(values, self.similarity(x).transpose(1, 2))
        return propagated.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"
