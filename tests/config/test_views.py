"""ViewGroup: SimCLR defaults, YAML-friendly pairs, and clear refusals of impossible recipes."""

from __future__ import annotations

import pytest

from sslvision.config.views import ViewGroup


def test_defaults_are_the_simclr_imagenet_recipe() -> None:
    group = ViewGroup()
    assert (group.count, group.size, group.scale) == (2, 224, (0.08, 1.0))
    assert (group.brightness, group.contrast, group.saturation, group.hue) == (0.8, 0.8, 0.8, 0.2)
    assert (group.jitter_p, group.grayscale_p, group.blur_p, group.solarize_p) == (0.8, 0.2, 0.5, 0)
    assert group.blur_kernel_size == 23 and group.is_global


@pytest.mark.parametrize(("size", "kernel"), [(224, 23), (96, 9), (64, 7), (32, 3), (16, 3)])
def test_blur_kernel_is_a_tenth_of_the_view_and_odd(size: int, kernel: int) -> None:
    assert ViewGroup(size=size).blur_kernel_size == kernel


def test_lists_from_yaml_become_tuples() -> None:
    assert ViewGroup(scale=[0.2, 1.0]).scale == (0.2, 1.0)  # type: ignore[arg-type]


def test_jitter_counts_as_enabled_only_with_a_strength_and_a_probability() -> None:
    assert ViewGroup().jitter_enabled
    assert not ViewGroup(jitter_p=0.0).jitter_enabled
    assert not ViewGroup(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0).jitter_enabled


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(count=0), "ViewGroup.count must be at least 1, got 0"),
        (dict(size=0), "ViewGroup.size must be at least 1 pixel"),
        (dict(scale=(0.5, 0.2)), "ViewGroup.scale must be (lo, hi) with 0.0 < lo <= hi <= 1.0"),
        (dict(scale=(0.2, 1.5)), "ViewGroup.scale must be"),
        (dict(ratio=(0.0, 1.0)), "ViewGroup.ratio must be (lo, hi) with 0.0 < lo <= hi, got"),
        (dict(blur_sigma=(2.0,)), "ViewGroup.blur_sigma must be"),
        (dict(blur_p=1.5), "ViewGroup.blur_p is a probability and must be in [0, 1], got 1.5"),
        (dict(hflip_p=-0.1), "ViewGroup.hflip_p is a probability"),
        (dict(contrast=-1.0), "ViewGroup.contrast must be >= 0"),
        (dict(hue=0.6), "ViewGroup.hue must be in [0, 0.5], got 0.6"),
    ],
)
def test_impossible_recipes_are_refused_by_field_name(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        ViewGroup(**kwargs)
    assert message in str(excinfo.value)
