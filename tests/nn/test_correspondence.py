"""Cell correspondence across views: identical, mirrored and disjoint crops, and real pipeline
views of different sizes checked against images whose pixels encode their own coordinates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sslvision.augment.pipeline import ViewPipeline
from sslvision.config.views import ViewGroup
from sslvision.nn.correspondence import (
    cell_centers,
    feature_grid,
    normalized_distances,
    positive_pairs,
)

NO_FLIP = torch.tensor([False])
FLIP = torch.tensor([True])


@pytest.mark.parametrize("grid", [(1, 1), (3, 3), (4, 7)])
def test_identical_crops_match_cell_to_cell(grid: tuple[int, int]) -> None:
    h, w = grid
    cells = h * w
    square_bins = torch.tensor([[5.0, 3.0, 5.0 + 8 * w, 3.0 + 8 * h]])
    stretched = torch.tensor([[5.0, 3.0, 45.0, 31.0]])
    for flips in (NO_FLIP, FLIP):
        for box in (square_bins, stretched):
            distances = normalized_distances(box, flips, grid, box, flips, grid)[0]
            torch.testing.assert_close(distances.diagonal(), torch.zeros(cells))
            assert torch.equal(distances.argmin(dim=1), torch.arange(cells))
        # With square bins the nearest other cell is a side away, 1/sqrt(2) > 0.7 diagonals.
        positives = positive_pairs(square_bins, flips, grid, square_bins, flips, grid, 0.7)[0]
        assert torch.equal(positives, torch.eye(cells, dtype=torch.bool))


def test_a_mirrored_view_matches_the_mirrored_cell() -> None:
    box, (h, w) = torch.tensor([[0.0, 0.0, 40.0, 30.0]]), (3, 4)
    positives = positive_pairs(box, NO_FLIP, (h, w), box, FLIP, (h, w))[0]
    for r in range(h):
        for c in range(w):
            matches = positives[r * w + c].nonzero().flatten().tolist()
            assert matches == [r * w + (w - 1 - c)], (r, c)


def test_disjoint_crops_give_no_positives() -> None:
    left, right = torch.tensor([[0.0, 0.0, 32.0, 32.0]]), torch.tensor([[32.0, 0.0, 64.0, 32.0]])
    for flips in (NO_FLIP, FLIP):  # touching crops: the nearest centres are a bin side apart
        assert not positive_pairs(left, NO_FLIP, (4, 4), right, flips, (4, 4)).any()
    far = torch.tensor([[40.0, 30.0, 64.0, 64.0]])
    for grid in [(1, 1), (2, 2), (5, 3)]:
        assert not positive_pairs(left, NO_FLIP, (4, 4), far, FLIP, grid).any()


def test_distances_are_in_units_of_the_larger_bin_diagonal() -> None:
    # View a: 1x1 map of a 6x8 crop (bin diagonal 10); view b: 2x2 map of the same crop (5).
    box = torch.tensor([[0.0, 0.0, 8.0, 6.0]])
    distances = normalized_distances(box, NO_FLIP, (1, 1), box, NO_FLIP, (2, 2))[0, 0]
    # The 1x1 cell's centre (4, 3) is half a small diagonal (2.5) from each small cell's centre.
    torch.testing.assert_close(distances, torch.full((4,), 0.25))


def coordinate_images(n: int, size: int) -> torch.Tensor:
    """uint8 images whose channel 0 holds 4 x (x + 0.5) and channel 1 holds 4 x (y + 0.5).

    The centre of pixel (x, y) lies at continuous coordinates (x + 0.5, y + 0.5); a resampled
    view then shows, at every pixel, the source coordinates it was read from (bilinear
    interpolation is exact on a linear ramp), up to uint8 rounding.
    """
    assert 4 * size <= 256
    ramp = 4 * torch.arange(size) + 2
    x, y = ramp.expand(size, size), ramp[:, None].expand(size, size)
    image = torch.stack([x, y, torch.zeros_like(x)])
    return image.to(torch.uint8).expand(n, 3, size, size).contiguous()


def test_pipeline_views_of_different_sizes_map_to_the_source_coordinates() -> None:
    """Pool each real view's coordinate image into a map's bins: the mean source coordinate of a
    bin is that cell's centre, which :func:`cell_centers` must predict from the recorded box and
    flip (to within a source pixel: kornia resamples with corner-aligned pixel centres)."""
    plain = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, scale=(0.25, 1.0), hflip_p=0.5)
    groups = [ViewGroup(count=1, size=32, **plain), ViewGroup(count=1, size=24, **plain)]
    pipeline = ViewPipeline(groups, mean=(0.0,) * 3, std=(1.0,) * 3)
    torch.manual_seed(0)
    views = pipeline(coordinate_images(16, 64))
    flips_seen = torch.cat(list(views.flips))
    assert flips_seen.any() and not flips_seen.all(), "both flipped and plain views are tested"
    for image, boxes, flips, grid in zip(
        views.images, views.boxes, views.flips, [(4, 4), (3, 3)], strict=True
    ):
        source_xy = image[:, :2] * 255 / 4  # (N, 2, s, s): source coordinates of every pixel
        measured = F.adaptive_avg_pool2d(source_xy, grid).flatten(2).transpose(1, 2)
        predicted = cell_centers(boxes, flips, grid)
        torch.testing.assert_close(predicted, measured, atol=1.0, rtol=0.0)


def test_feature_grid_refuses_token_sequences() -> None:
    assert feature_grid(torch.zeros(2, 8, 3, 5)) == (3, 5)
    with pytest.raises(ValueError, match="feature map as"):
        feature_grid(torch.zeros(2, 197, 384))
