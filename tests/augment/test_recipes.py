"""Named recipes: the published settings, and each one runs through the pipeline."""

from __future__ import annotations

import pytest
import torch

from sslvision.augment.pipeline import ViewPipeline
from sslvision.augment.recipes import RECIPES, byol_views, mocov2_views, simclr_views, swav_views


def test_simclr_has_two_views_and_blur_can_be_dropped_for_cifar() -> None:
    (group,) = simclr_views(224)
    assert group.count == 2 and group.blur_p == 0.5 and group.brightness == 0.8
    assert simclr_views(32, blur=False)[0].blur_p == 0.0


def test_byol_views_are_asymmetric() -> None:
    first, second = byol_views(96)
    assert (first.blur_p, first.solarize_p) == (1.0, 0.0)
    assert (second.blur_p, second.solarize_p) == (0.1, 0.2)
    for group in (first, second):
        assert group.count == 1 and group.size == 96 and group.is_global
        assert (group.brightness, group.contrast, group.saturation, group.hue) == (
            0.4,
            0.4,
            0.2,
            0.1,
        )
        assert (group.jitter_p, group.grayscale_p) == (0.8, 0.2)


def test_mocov2_uses_a_larger_minimum_crop_and_milder_jitter() -> None:
    (group,) = mocov2_views(64)
    assert group.count == 2 and group.scale == (0.2, 1.0) and group.blur_p == 0.5
    assert (group.brightness, group.contrast, group.saturation, group.hue) == (0.4, 0.4, 0.4, 0.1)


def test_swav_multi_crop_is_two_global_and_six_local_crops() -> None:
    global_crops, local_crops = swav_views(224)
    assert (global_crops.count, global_crops.size, global_crops.scale) == (2, 224, (0.14, 1.0))
    assert (local_crops.count, local_crops.size, local_crops.scale) == (6, 96, (0.05, 0.14))
    assert global_crops.is_global and not local_crops.is_global


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_gives_two_global_views_of_its_size(name: str) -> None:
    pipeline = ViewPipeline(RECIPES[name](16), (0.5,) * 3, (0.25,) * 3)
    views = pipeline(torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8))
    assert views.global_count == 2
    assert all(image.shape == (4, 3, 16, 16) for image in views.images[:2])
    assert all(image.shape[-1] < 16 for image in views.images[2:])
