"""Where the cells of a view's feature map lie in the source image, and which cells of two views
show the same place.

A view is a crop ``(x1, y1, x2, y2)`` of the source image (continuous pixel coordinates, the full
image spanning ``(0, 0, W, H)``), resized to the view size and possibly mirrored horizontally
(:class:`sslvision.augment.views.Views`). A backbone's ``h x w`` feature map divides the view into
``h x w`` equal bins, so cell ``(r, c)`` covers the part of the crop from ``c / w`` to
``(c + 1) / w`` across (counted from the right edge when mirrored) and ``r / h`` to ``(r + 1) / h``
down. PixPro (Xie et al., CVPR 2021, eq. 1) calls two cells a positive pair when their
centres in the source image are closer than a threshold, measured in units of the larger of the
two views' bin diagonals, which makes the test independent of the crop scales and map sizes.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check(boxes: Tensor, flips: Tensor, grid: tuple[int, int]) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4 or flips.shape != boxes.shape[:1]:
        raise ValueError(
            f"correspondence needs boxes (N, 4) and flips (N,), got {tuple(boxes.shape)} and "
            f"{tuple(flips.shape)}"
        )
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"a feature-map grid is (h, w) with h, w >= 1, got {tuple(grid)}")


def feature_grid(feature_map: Tensor) -> tuple[int, int]:
    """``(h, w)`` of a backbone's (N, C, h, w) feature map; a clear error for token sequences.

    >>> feature_grid(torch.zeros(2, 512, 7, 7))
    (7, 7)
    """
    if feature_map.dim() != 4:
        raise ValueError(
            f"dense methods need the backbone's last feature map as (N, C, h, w), got shape "
            f"{tuple(feature_map.shape)}: use a CNN backbone such as resnet50"
        )
    return int(feature_map.shape[-2]), int(feature_map.shape[-1])


def cell_centers(boxes: Tensor, flips: Tensor, grid: tuple[int, int]) -> Tensor:
    """Source-image ``(x, y)`` of the centre of every cell of an ``h x w`` map: (N, h * w, 2).

    Cells are in row-major order, as ``feature_map.flatten(2)`` lays them out. A mirrored view's
    column ``c`` shows the crop's column ``w - 1 - c``.

    >>> box = torch.tensor([[0.0, 0.0, 8.0, 4.0]])
    >>> cell_centers(box, torch.tensor([False]), (1, 2)).tolist()
    [[[2.0, 2.0], [6.0, 2.0]]]
    >>> cell_centers(box, torch.tensor([True]), (1, 2)).tolist()
    [[[6.0, 2.0], [2.0, 2.0]]]
    """
    _check(boxes, flips, grid)
    h, w = grid
    boxes = boxes.float()
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    fx = (torch.arange(w, device=boxes.device, dtype=boxes.dtype) + 0.5) / w  # (w,) in (0, 1)
    fy = (torch.arange(h, device=boxes.device, dtype=boxes.dtype) + 0.5) / h
    fx = torch.where(flips[:, None], 1.0 - fx, fx)  # (N, w)
    x = x1[:, None] + fx * (x2 - x1)[:, None]  # (N, w)
    y = y1[:, None] + fy * (y2 - y1)[:, None]  # (N, h)
    centers = torch.stack([x[:, None, :].expand(-1, h, -1), y[:, :, None].expand(-1, -1, w)], -1)
    return centers.reshape(boxes.shape[0], h * w, 2)


def bin_diagonal(boxes: Tensor, grid: tuple[int, int]) -> Tensor:
    """The diagonal of one cell of an ``h x w`` map, in source pixels: (N,)."""
    h, w = grid
    widths = (boxes[:, 2] - boxes[:, 0]).float() / w
    heights = (boxes[:, 3] - boxes[:, 1]).float() / h
    return torch.sqrt(widths**2 + heights**2)


def normalized_distances(
    boxes_a: Tensor,
    flips_a: Tensor,
    grid_a: tuple[int, int],
    boxes_b: Tensor,
    flips_b: Tensor,
    grid_b: tuple[int, int],
) -> Tensor:
    """Distances between the cell centres of two views, over the larger bin diagonal: (N, Sa, Sb).

    Entry ``[n, i, j]`` compares cell ``i`` of view ``a`` with cell ``j`` of view ``b`` of sample
    ``n`` (row-major cells, see :func:`cell_centers`). The views may differ in size and map size.

    >>> box, no = torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([False])
    >>> normalized_distances(box, no, (2, 2), box, no, (2, 2))[0, 0].tolist()  # cell 0 vs all
    [0.0, 0.7071067690849304, 0.7071067690849304, 1.0]
    """
    centers_a = cell_centers(boxes_a, flips_a, grid_a)
    centers_b = cell_centers(boxes_b, flips_b, grid_b)
    scale = torch.maximum(bin_diagonal(boxes_a, grid_a), bin_diagonal(boxes_b, grid_b))
    # The plain difference, not torch.cdist, whose matrix-product path is inexact at 0.
    distances = (centers_a[:, :, None, :] - centers_b[:, None, :, :]).norm(dim=-1)
    return distances / scale[:, None, None]


def positive_pairs(
    boxes_a: Tensor,
    flips_a: Tensor,
    grid_a: tuple[int, int],
    boxes_b: Tensor,
    flips_b: Tensor,
    grid_b: tuple[int, int],
    threshold: float = 0.7,
) -> Tensor:
    """Boolean (N, Sa, Sb): the cell pairs whose normalised distance is below ``threshold``.

    With PixPro's 0.7 (Xie et al. 2021), two identical crops with square bins pair each cell with
    itself only: the nearest other cell is a side away, 1 / sqrt(2) of the bin's diagonal. Two
    touching crops of one size pair nothing; two nearby crops of very different scales can still
    pair cells, since the distance unit is the larger of their bins.
    """
    distances = normalized_distances(boxes_a, flips_a, grid_a, boxes_b, flips_b, grid_b)
    return distances < threshold
