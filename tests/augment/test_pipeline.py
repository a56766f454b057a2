"""ViewPipeline: shapes, value range, crop boxes and flips that match the pixels, determinism."""

from __future__ import annotations

import kornia.augmentation as K
import pytest
import torch

from sslvision.augment.pipeline import GroupAugment, ViewPipeline
from sslvision.config.views import ViewGroup

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_images(n: int = 6, height: int = 40, width: int = 48) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8)


def geometry_only(**overrides: object) -> ViewGroup:
    """A group with every colour op off, so pixels only move (crop and flip)."""
    settings = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
    settings.update(overrides)
    return ViewGroup(**settings)


def coordinate_images(n: int, height: int, width: int) -> torch.Tensor:
    """Channel 0 holds each pixel's x index and channel 1 its y index (exact in uint8)."""
    xs = torch.arange(width, dtype=torch.uint8).expand(height, width)
    ys = torch.arange(height, dtype=torch.uint8)[:, None].expand(height, width)
    image = torch.stack([xs, ys, torch.zeros_like(xs)])
    return image.expand(n, 3, height, width).clone()


def test_views_have_the_group_shapes_dtype_and_a_normalised_range() -> None:
    pipeline = ViewPipeline([ViewGroup(count=2, size=24)], IMAGENET_MEAN, IMAGENET_STD)
    views = pipeline(random_images())
    assert len(views) == 2 and views.global_count == 2
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for image, boxes, flips in zip(views.images, views.boxes, views.flips, strict=True):
        assert image.shape == (6, 3, 24, 24) and image.dtype == torch.float32
        assert image.is_contiguous()
        assert boxes.shape == (6, 4) and boxes.dtype == torch.float32
        assert flips.shape == (6,) and flips.dtype == torch.bool
        # every op before Normalize keeps pixels in [0, 1]
        assert (image >= (0 - mean) / std - 1e-4).all() and (image <= (1 - mean) / std + 1e-4).all()
        assert image.std() > 0.1  # not collapsed to a constant


def test_multi_crop_groups_give_their_sizes_in_order() -> None:
    groups = [ViewGroup(count=2, size=32), ViewGroup(count=4, size=16, is_global=False)]
    views = ViewPipeline(groups, IMAGENET_MEAN, IMAGENET_STD)(random_images(n=3))
    assert len(views) == 6 and views.global_count == 2
    assert [tuple(v.shape) for v in views.images] == [(3, 3, 32, 32)] * 2 + [(3, 3, 16, 16)] * 4
    assert all(b.shape == (3, 4) for b in views.boxes)
    assert all(f.shape == (3,) for f in views.flips)


@pytest.mark.parametrize("chunk_pixels", [None, 5 * 2 * 16 * 16], ids=["whole", "chunks-of-5"])
def test_boxes_and_flips_describe_where_the_pixels_came_from(
    chunk_pixels: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if chunk_pixels:  # a CPU augments in chunks; 32 images in chunks of 5, the last one short
        monkeypatch.setattr("sslvision.augment.pipeline.CPU_CHUNK_PIXELS", chunk_pixels)
    n, height, width, size = 32, 60, 80, 16
    pipeline = ViewPipeline(
        [geometry_only(count=2, size=size, scale=(0.1, 0.9))],
        (0.0,) * 3,
        (1.0,) * 3,
    )
    torch.manual_seed(0)
    views = pipeline(coordinate_images(n, height, width))
    for image, boxes, flips in zip(views.images, views.boxes, views.flips, strict=True):
        pixel = image * 255  # back to source pixel indices
        x1, y1, x2, y2 = boxes.unbind(1)
        assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= width).all() and (y2 <= height).all()
        assert (x2 > x1).all() and (y2 > y1).all()
        left, right = pixel[:, 0, 0, 0], pixel[:, 0, 0, -1]
        top, bottom = pixel[:, 1, 0, 0], pixel[:, 1, -1, 0]
        # The first and last pixel centres of a crop are x1 and x2 - 1 (continuous box). kornia
        # maps them onto the output's corner pixels (align_corners=True), so they read back exactly;
        # a box off by one pixel fails here.
        first_x = torch.where(flips, x2 - 1, x1)
        last_x = torch.where(flips, x1, x2 - 1)
        torch.testing.assert_close(left, first_x, atol=0.01, rtol=0)
        torch.testing.assert_close(right, last_x, atol=0.01, rtol=0)
        torch.testing.assert_close(top, y1, atol=0.01, rtol=0)
        torch.testing.assert_close(bottom, y2 - 1, atol=0.01, rtol=0)
        wide = (x2 - x1) > 2
        assert ((right < left) == flips)[wide].all()
    flips = torch.cat(list(views.flips))
    assert flips.any() and not flips.all()  # p=0.5 over 64 views


def test_chunks_keep_pre_cut_crops_and_their_boxes_in_view_major_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sslvision.augment.pipeline.CPU_CHUNK_PIXELS", 3 * 4 * 8 * 8)
    pipeline = ViewPipeline([geometry_only(count=4, size=8, hflip_p=0.0)], (0.0,) * 3, (1.0,) * 3)
    crops = torch.randint(0, 256, (10, 4, 3, 8, 8), dtype=torch.uint8)
    boxes = torch.rand(10, 4, 4)
    views = pipeline([crops], boxes=[boxes])
    for k in range(4):
        torch.testing.assert_close(views.images[k], crops[:, k].float() / 255)
        torch.testing.assert_close(views.boxes[k], boxes[:, k])


def test_same_seed_gives_the_same_views_and_each_sample_its_own_crop() -> None:
    pipeline = ViewPipeline([ViewGroup(count=2, size=16)], IMAGENET_MEAN, IMAGENET_STD)
    images = random_images(n=8)
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(pipeline(images))
    first, again, other = runs
    for a, b in zip(
        [*first.images, *first.boxes, *first.flips],
        [*again.images, *again.boxes, *again.flips],
        strict=True,
    ):
        assert torch.equal(a, b)
    assert not torch.equal(first.boxes[0], other.boxes[0])
    assert len({tuple(box.tolist()) for box in first.boxes[0]}) > 1  # per-sample parameters
    assert not torch.equal(first.boxes[0], first.boxes[1])  # the two views differ too


def test_input_batch_is_left_untouched() -> None:
    images = random_images()
    before = images.clone()
    ViewPipeline([ViewGroup(count=2, size=16, solarize_p=1.0)], IMAGENET_MEAN, IMAGENET_STD)(images)
    assert torch.equal(images, before)


def test_disabled_ops_are_not_built() -> None:
    group = GroupAugment(geometry_only(hflip_p=0.0))
    assert group.flip is None and group.jitter is None and len(group.later_ops) == 0
    views = ViewPipeline([geometry_only(hflip_p=0.0, size=8)], (0.0,) * 3, (1.0,) * 3)(
        random_images()
    )
    assert not torch.cat(list(views.flips)).any()
    jitter_without_strength = ViewGroup(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    assert GroupAugment(jitter_without_strength).jitter is None


def test_solarize_inverts_pixels_at_or_above_half() -> None:
    whole_image = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_p=0.0)
    group = geometry_only(count=1, size=8, solarize_p=1.0, **whole_image)
    images = torch.full((2, 3, 8, 8), 200, dtype=torch.uint8)
    images[:, :, :, :4] = 100
    out = ViewPipeline([group], (0.0,) * 3, (1.0,) * 3)(images).images[0] * 255
    torch.testing.assert_close(out[:, :, :, :4], torch.full_like(out[:, :, :, :4], 100.0))
    torch.testing.assert_close(out[:, :, :, 4:], torch.full_like(out[:, :, :, 4:], 55.0))


def test_repr_lists_the_groups() -> None:
    groups = [ViewGroup(count=2, size=32), ViewGroup(count=4, size=16, is_global=False)]
    text = repr(ViewPipeline(groups, IMAGENET_MEAN, IMAGENET_STD))
    assert "2 global + 4 local" in text
    assert "ViewGroup(count=2, size=32" in text and "ViewGroup(count=4, size=16" in text


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(2, 3, 8, 8), "expects a non-empty uint8 image batch"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), "of shape (N, 3, H, W)"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "got torch.uint8 of shape (2, 1, 8, 8)"),
    ],
)
def test_wrong_input_is_refused_with_its_dtype_and_shape(
    images: torch.Tensor, message: str
) -> None:
    pipeline = ViewPipeline([ViewGroup(size=8)], IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(ValueError, match="ViewPipeline") as excinfo:
        pipeline(images)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(groups=[]), "at least one ViewGroup"),
        (
            dict(groups=[ViewGroup(is_global=False), ViewGroup()]),
            "global view groups before local ones",
        ),
        (dict(mean=(0.5, 0.5)), "mean and std need 3 values"),
        (dict(std=(0.2, 0.0, 0.2)), "std values must be positive"),
    ],
)
def test_bad_configuration_is_refused_clearly(kwargs: dict, message: str) -> None:
    arguments = dict(groups=[ViewGroup()], mean=IMAGENET_MEAN, std=IMAGENET_STD) | kwargs
    with pytest.raises(ValueError, match=message):
        ViewPipeline(**arguments)


def test_same_size_groups_share_one_tensor_in_the_memory_format() -> None:
    """BYOL's two single-view groups are one batch: a method forwards it without concatenating."""
    groups = [ViewGroup(count=1, size=16), ViewGroup(count=1, size=16, solarize_p=1.0)]
    groups.append(ViewGroup(count=2, size=8, is_global=False))
    pipeline = ViewPipeline(groups, IMAGENET_MEAN, IMAGENET_STD, torch.channels_last)
    labels = torch.arange(3)
    views = pipeline(random_images(n=3), labels)
    assert views.labels is labels
    assert views.images.counts == (2, 2) and [run.shape[0] for run in views.images.runs] == [6, 6]
    big = views.images.runs[0]
    assert views.images[1].data_ptr() == big[3:].data_ptr()
    for image in views.images:
        assert image.is_contiguous(memory_format=torch.channels_last)
    assert views.boxes.counts == (1, 1, 2) and views.flips.counts == (1, 1, 2)


def test_normalisation_is_kornias() -> None:
    group = ViewGroup(count=2, size=16)
    images = random_images()
    torch.manual_seed(3)
    views = ViewPipeline([group], IMAGENET_MEAN, IMAGENET_STD)(images)
    torch.manual_seed(3)
    crops, _, _ = GroupAugment(group)(images.float().div_(255))
    expected = K.Normalize(torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD))(crops)
    assert torch.equal(views.images.runs[0], expected)
