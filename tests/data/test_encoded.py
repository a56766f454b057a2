"""data.decode=device: the workers read bytes, the training device decodes and cuts them. The
views of a seed must be the workers' views (bit for bit on a CPU, within the decoders' and
resamplers' rounding on a GPU); what the device cannot decode takes the workers' decoder; a
corrupt file is named; settings that cannot work are refused before any work."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from sslvision.config import config_from_dict
from sslvision.config.views import ViewGroup
from sslvision.data.encoded import EncodedImages, collate_encoded, cut_on_device
from sslvision.data.image_folder import ImageFolderDataset
from sslvision.data.original_crops import OriginalSizeCrops
from sslvision.data.synthetic import SyntheticShapesDataset
from sslvision.engine.trainer import train
from sslvision.errors import ConfigError, CorruptImageError

GROUPS = [ViewGroup(count=2, size=16), ViewGroup(count=3, size=8, is_global=False)]


def _photo(index: int) -> Image.Image:
    """A smooth non-square picture, landscape or portrait by ``index``."""
    generator = torch.Generator().manual_seed(index)
    height, width = (30, 44) if index % 2 else (44, 30)
    coarse = torch.rand(1, 3, 4, 4, generator=generator)
    pixels = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")
    array = (pixels[0] * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def _write_folder(root: Path) -> list[Path]:
    """Six JPEGs in two classes, one of them grayscale, and a PNG, which nvJPEG cannot read."""
    paths = []
    for index in range(7):
        folder = root / f"class{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        image = _photo(index)
        if index == 6:
            paths.append(folder / "6.png")
            image.save(paths[-1])
            continue
        if index == 3:
            image = image.convert("L")
        paths.append(folder / f"{index}.jpg")
        image.save(paths[-1], quality=92)
    return paths


def _batch(folder: ImageFolderDataset, seeds: list[int]):
    encoded = EncodedImages(folder, "folder")
    return collate_encoded([encoded[(index, seed)] for index, seed in enumerate(seeds)])


def test_on_a_cpu_the_device_path_gives_the_workers_views_bit_for_bit(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    folder = ImageFolderDataset(tmp_path, image_size=16)
    seeds = [101 + index for index in range(len(folder))]
    crops, boxes = cut_on_device(_batch(folder, seeds), GROUPS, torch.device("cpu"))
    workers = OriginalSizeCrops(folder, GROUPS, "folder")
    for index, seed in enumerate(seeds):
        worker_crops, worker_boxes = workers[(index, seed)][:2]
        for group in range(len(GROUPS)):
            assert torch.equal(crops[group][index], worker_crops[group])
            assert torch.equal(boxes[group][index], worker_boxes[group])


def test_a_corrupt_jpeg_in_the_batch_is_named(tmp_path: Path) -> None:
    paths = _write_folder(tmp_path)
    broken = paths[2]
    broken.write_bytes(broken.read_bytes()[:40])  # the JPEG marker, then nothing
    folder = ImageFolderDataset(tmp_path, image_size=16)
    with pytest.raises(CorruptImageError, match=broken.name):
        cut_on_device(_batch(folder, list(range(len(folder)))), GROUPS, torch.device("cpu"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"decode": "gpu"}, "unknown data.decode 'gpu'. Valid choices: workers, device."),
        ({"decode": "device"}, "needs data.crop=original, got data.crop='squash'"),
        (
            {"decode": "device", "crop": "original", "skip_corrupt": True},
            "use data.decode=workers to skip corrupt images",
        ),
    ],
)
def test_settings_that_cannot_work_are_refused_by_name(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        config_from_dict({"data": data})


def test_a_data_set_without_files_is_refused_naming_the_choice() -> None:
    synthetic = SyntheticShapesDataset(num_images=10, image_size=16, seed=0, split="train")
    with pytest.raises(ConfigError, match=r"use data\.decode=workers"):
        EncodedImages(synthetic, "synthetic")


def _recipe(root: Path, output: Path, decode: str) -> dict:
    return {
        "name": f"decode-{decode}",
        "output_dir": str(output),
        "data": {"dataset": "folder", "path": str(root), "crop": "original", "decode": decode},
        "augment": {"recipe": "simclr", "size": 16},
        "model": {"backbone": "timm:test_resnet"},
        "method": {"name": "pixpro", "proj_hidden_dim": 16, "proj_output_dim": 8},
        "train": {"epochs": 1, "batch_size": 3, "log_every": 1, "progress_bar": False},
    }


def test_training_with_device_decoding_logs_the_workers_losses(tmp_path: Path) -> None:
    """PixPro, whose loss reads the boxes: the same losses from both paths, two workers each."""
    _write_folder(tmp_path / "photos")
    runs = {
        decode: train(config_from_dict(_recipe(tmp_path / "photos", tmp_path, decode)))
        for decode in ("workers", "device")
    }
    losses = {decode: [row["loss"] for row in run.metrics] for decode, run in runs.items()}
    assert len(losses["device"]) == 2 and all(math.isfinite(x) for x in losses["device"])
    assert losses["device"] == losses["workers"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compares a GPU's decode with the CPU's")
def test_on_a_gpu_the_views_match_the_cpus_within_rounding(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    folder = ImageFolderDataset(tmp_path, image_size=16)
    batch = _batch(folder, list(range(len(folder))))
    on_cpu = cut_on_device(batch, GROUPS, torch.device("cpu"))
    on_gpu = cut_on_device(batch, GROUPS, torch.device("cuda"))
    for cpu_crops, gpu_crops in zip(on_cpu[0], on_gpu[0], strict=True):
        gap = (cpu_crops.float() - gpu_crops.cpu().float()).abs()
        assert gap.max() <= 8 and gap.mean() <= 1.0  # IDCT and resampling rounding, in levels
    for cpu_boxes, gpu_boxes in zip(on_cpu[1], on_gpu[1], strict=True):
        assert torch.equal(cpu_boxes, gpu_boxes.cpu())
