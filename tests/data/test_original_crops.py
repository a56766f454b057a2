"""Crops drawn on each image's original size (``data.crop=original``): the papers' scale and
ratio semantics in original pixels, crops that show what their box covers, seeds that depend
only on (run seed, epoch, index), and a training run that does not depend on the worker count."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from sslvision.augment.pipeline import ViewPipeline
from sslvision.config import config_from_dict
from sslvision.config.views import ViewGroup
from sslvision.data.image_folder import ImageFolderDataset
from sslvision.data.original_crops import OriginalSizeCrops, cut_views
from sslvision.data.sampler import ResumableSampler
from sslvision.data.synthetic import SyntheticShapesDataset
from sslvision.engine.trainer import train
from sslvision.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
HEIGHT, WIDTH = 60, 100


def _coordinate_image(height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    """Red is the column and green the row, each scaled to 0-255: a crop's mean colour says
    where in the original it came from."""
    x = torch.linspace(0, 255, width).round().to(torch.uint8).expand(height, width)
    y = torch.linspace(0, 255, height).round().to(torch.uint8)[:, None].expand(height, width)
    return torch.stack([x, y, torch.zeros_like(x)])


def test_boxes_follow_the_papers_scale_and_ratio_in_original_pixels() -> None:
    group = ViewGroup(count=2, size=16, scale=(0.2, 0.6), ratio=(3 / 4, 4 / 3))
    for seed in range(200):
        (crops,), (boxes,) = cut_views(_coordinate_image(), [group], seed)
        assert crops.dtype == torch.uint8 and crops.shape == (2, 3, 16, 16)
        for x1, y1, x2, y2 in boxes.tolist():
            width, height = x2 - x1, y2 - y1
            assert 0 <= x1 < x2 <= WIDTH and 0 <= y1 < y2 <= HEIGHT
            # torchvision rounds the side lengths to whole pixels: allow half a pixel a side
            area = width * height / (WIDTH * HEIGHT)
            slack = (width + height) / (WIDTH * HEIGHT)
            assert 0.2 - slack <= area <= 0.6 + slack, (seed, area)
            assert 3 / 4 * (1 - 1 / height) <= width / height <= 4 / 3 * (1 + 1 / height)


def test_a_crop_shows_the_region_its_box_names() -> None:
    group = ViewGroup(count=4, size=24, scale=(0.1, 0.5))
    (crops,), (boxes,) = cut_views(_coordinate_image(), [group], seed=3)
    for crop, (x1, y1, x2, y2) in zip(crops, boxes.tolist(), strict=True):
        centre_x = crop[0].double().mean() / 255 * (WIDTH - 1)
        centre_y = crop[1].double().mean() / 255 * (HEIGHT - 1)
        assert abs(centre_x - ((x1 + x2) / 2 - 0.5)) < 1.0
        assert abs(centre_y - ((y1 + y2) / 2 - 0.5)) < 1.0


def test_an_impossible_draw_falls_back_to_the_centred_crop_of_the_nearest_ratio() -> None:
    """All of a 60x100 image at ratio 1 cannot fit: the fallback is the centred 60x60 square."""
    (_,), (boxes,) = cut_views(_coordinate_image(), [ViewGroup(1, 8, (1.0, 1.0), (1, 1))], 0)
    assert boxes.tolist() == [[20.0, 0.0, 80.0, 60.0]]


def test_crops_are_a_function_of_the_seed_and_leave_the_global_stream_alone() -> None:
    groups = [ViewGroup(count=2, size=16), ViewGroup(count=3, size=8, is_global=False)]
    before = torch.get_rng_state()
    first = cut_views(_coordinate_image(), groups, seed=11)
    assert torch.equal(torch.get_rng_state(), before)
    again = cut_views(_coordinate_image(), groups, seed=11)
    other = cut_views(_coordinate_image(), groups, seed=12)
    for a, b in zip(first[0] + first[1], again[0] + again[1], strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first[1][0], other[1][0])


def test_crop_seeds_depend_only_on_seed_epoch_and_index() -> None:
    def seeds(rank: int, world: int, epoch: int, start: int = 0) -> dict[int, int]:
        sampler = ResumableSampler(20, seed=5, rank=rank, world_size=world, seeded=True)
        sampler.set_epoch(epoch, start_index=start)
        return dict(iter(sampler))

    one_process = seeds(0, 1, epoch=2)
    assert len(one_process) == 20 and len(set(one_process.values())) == 20
    assert {**seeds(0, 2, epoch=2), **seeds(1, 2, epoch=2)} == one_process  # ranks split them
    resumed = seeds(0, 1, epoch=2, start=7)
    assert len(resumed) == 13 and all(one_process[i] == s for i, s in resumed.items())
    assert seeds(0, 1, epoch=3) != one_process
    plain = ResumableSampler(20, seed=5)
    plain.set_epoch(2)
    assert list(plain) == list(one_process)  # the same order, seeded or not


def _write_photos(root: Path) -> None:
    """Eight non-square images in two classes, landscape and portrait."""
    generator = torch.Generator().manual_seed(0)
    for index in range(8):
        shape = (3, 24, 40) if index % 2 else (3, 40, 24)
        image = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        path = root / f"class{index % 2}" / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_png(image, str(path))


def test_a_folder_hands_out_its_originals_and_a_batch_becomes_views(tmp_path: Path) -> None:
    _write_photos(tmp_path)
    folder = ImageFolderDataset(tmp_path, image_size=16)
    assert folder.read_original(0)[0].shape == (3, 40, 24)
    assert folder[0][0].shape == (3, 16, 16)
    groups = [ViewGroup(count=2, size=16), ViewGroup(count=2, size=8, is_global=False)]
    crops = OriginalSizeCrops(folder, groups, "folder")
    samples = [crops[(index, 100 + index)] for index in range(4)]
    batch_crops = [torch.stack([s[0][g] for s in samples]) for g in range(2)]
    batch_boxes = [torch.stack([s[1][g] for s in samples]) for g in range(2)]
    views = ViewPipeline(groups, (0.5,) * 3, (0.25,) * 3)(batch_crops, None, batch_boxes)
    assert [tuple(v.shape) for v in views.images] == [(4, 3, 16, 16)] * 2 + [(4, 3, 8, 8)] * 2
    # view-major rows: view k of the group holds every image's k-th crop, boxes unchanged
    assert torch.equal(views.boxes[1], batch_boxes[0][:, 1])
    assert torch.equal(views.boxes[2], batch_boxes[1][:, 0])


def test_crops_of_the_wrong_shape_are_refused_by_the_pipeline() -> None:
    pipeline = ViewPipeline([ViewGroup(count=2, size=16)], (0.5,) * 3, (0.25,) * 3)
    crops = torch.zeros(4, 2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"must be \(N, 2, 3, 16, 16\)"):
        pipeline([crops], None, [torch.zeros(4, 2, 4)])
    with pytest.raises(ValueError, match="1 view groups but was given crops of 2"):
        pipeline([crops, crops], None, [torch.zeros(4, 2, 4)] * 2)


def test_a_data_set_without_originals_is_refused_naming_the_choice() -> None:
    synthetic = SyntheticShapesDataset(num_images=10, image_size=16, seed=0, split="train")
    with pytest.raises(ConfigError, match=r"data\.crop=squash"):
        OriginalSizeCrops(synthetic, [ViewGroup()], "synthetic")
    with pytest.raises(ConfigError, match="Valid choices: squash, original"):
        config_from_dict({"data": {"crop": "centre"}})


def _recipe(root: Path, output: Path, workers: int) -> dict:
    return {
        "name": "original-crops",
        "output_dir": str(output),
        "data": {
            "dataset": "folder",
            "path": str(root),
            "crop": "original",
            "num_workers": workers,
        },
        "augment": {"recipe": "simclr", "size": 16},
        "model": {"backbone": "timm:test_resnet"},
        "method": {"name": "pixpro", "proj_hidden_dim": 16, "proj_output_dim": 8},
        "train": {"epochs": 2, "batch_size": 4, "log_every": 1, "progress_bar": False},
        "checkpoint": {"save_every_steps": 1},
    }


@pytest.mark.slow
def test_training_on_original_crops_does_not_depend_on_the_worker_count(tmp_path: Path) -> None:
    """PixPro, whose loss reads the boxes: the same losses with no workers and with two."""
    _write_photos(tmp_path / "photos")
    runs = [
        train(config_from_dict(_recipe(tmp_path / "photos", tmp_path / f"w{w}", w))) for w in (0, 2)
    ]
    losses = [[row["loss"] for row in run.metrics] for run in runs]
    assert len(losses[0]) == 4 and all(math.isfinite(loss) for loss in losses[0])
    assert losses[0] == losses[1]
