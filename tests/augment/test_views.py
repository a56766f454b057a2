"""Views: one box and flip tensor per view, and a global count that fits."""

from __future__ import annotations

import pytest
import torch

from sslvision.augment.views import Views


def make_views(count: int, global_count: int) -> Views:
    images = [torch.zeros(2, 3, 8, 8) for _ in range(count)]
    boxes = [torch.zeros(2, 4) for _ in range(count)]
    flips = [torch.zeros(2, dtype=torch.bool) for _ in range(count)]
    return Views(images, boxes, flips, global_count)


def test_length_is_the_number_of_views() -> None:
    views = make_views(6, 2)
    assert len(views) == 6 and views.global_count == 2


def test_mismatched_lists_are_refused() -> None:
    with pytest.raises(
        ValueError, match="one box tensor and one flip tensor per view: got 2 images"
    ):
        Views([torch.zeros(1, 3, 4, 4)] * 2, [torch.zeros(1, 4)], [torch.zeros(1)] * 2, 2)


def test_global_count_beyond_the_views_is_refused() -> None:
    with pytest.raises(ValueError, match=r"global_count must be between 0 and .* \(2\), got 3"):
        make_views(2, 3)
