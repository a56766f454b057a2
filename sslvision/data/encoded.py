"""Training images as file bytes, decoded and cut on the training device (data.decode=device).

On a GPU machine the CPU workers are what limits a 224 px recipe: decoding a full ImageNet JPEG
costs a core 5-10 ms, while nvJPEG decodes a batch at thousands of images a second. With
``data.decode=device`` the workers only read each file's bytes; the training process hands the
whole batch to TorchCodec's ``decode_jpeg`` on the device in one call, then cuts each view's
crop from the decoded original with the same seeded draws as the worker path
(:func:`~sslvision.data.original_crops.cut_views`, ``data.crop=original``). The views of a seed
are therefore the same on both paths, up to the decoders' and resamplers' rounding.

What the device's decoder cannot read (PNG, BMP, some CMYK JPEGs, a corrupt file) is decoded
again, alone, by the workers' decoder in the training process, which turns every supported
format into RGB uint8 or raises the error that names the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchcodec.decoders import decode_jpeg

from sslvision.config.views import ViewGroup
from sslvision.data.decode import read_image_rgb
from sslvision.data.original_crops import cut_views
from sslvision.errors import ConfigError

_JPEG_MAGIC = b"\xff\xd8\xff"


class HasEncoded(Protocol):
    """A dataset that can hand out its images as the bytes of their files."""

    def __len__(self) -> int: ...

    def read_encoded(self, index: int) -> tuple[Tensor, int, str]: ...


@dataclass
class EncodedBatch:
    """A loader batch of file bytes: what the workers hand over with ``data.decode=device``."""

    data: list[Tensor]  # each image's file, 1-D uint8
    seeds: Tensor  # (N,) int64: each sample's crop seed
    labels: Tensor  # (N,) int64
    paths: list[str]  # for the errors that name a file

    def pin_memory(self) -> EncodedBatch:
        """The loader's pinning thread calls this, so bytes go to a GPU without a staging copy."""
        return EncodedBatch(
            [d.pin_memory() for d in self.data], self.seeds, self.labels, self.paths
        )


class EncodedImages(Dataset):
    """``source``'s images as file bytes; an item is ``(index, seed)`` (a seeded sampler's)."""

    def __init__(self, source: Any, dataset_name: str) -> None:
        if not callable(getattr(source, "read_encoded", None)):
            raise ConfigError(
                f"data.decode=device reads image files; data.dataset '{dataset_name}' has no "
                "files to read (the 'folder' data set has): use data.decode=workers"
            )
        self.source: HasEncoded = source
        self.num_classes = getattr(source, "num_classes", 0)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int, int, str]:
        index, seed = item
        data, label, path = self.source.read_encoded(index)
        return data, seed, label, path


def collate_encoded(items: Sequence[tuple[Tensor, int, int, str]]) -> EncodedBatch:
    """The loader's ``collate_fn``: files differ in length, so they stay a list."""
    data, seeds, labels, paths = zip(*items, strict=True)
    return EncodedBatch(list(data), torch.tensor(seeds), torch.tensor(labels), list(paths))


def decode_on(batch: EncodedBatch, device: torch.device) -> list[Tensor]:
    """Every image of ``batch`` as uint8 RGB (3, H, W) on ``device``, the JPEGs in one call."""
    images: list[Tensor | None] = [None] * len(batch.data)
    jpegs = [i for i, data in enumerate(batch.data) if _is_jpeg(data)]
    try:
        decoded = decode_jpeg([batch.data[i] for i in jpegs], mode="RGB", device=device)
    except RuntimeError:  # one file spoils the batch: decode one by one to find it
        decoded = [_decode_one(batch.data[i], device) for i in jpegs]
    for i, image in zip(jpegs, decoded, strict=True):
        images[i] = image
    for i, image in enumerate(images):
        if image is None:  # the workers' decoder: every format, errors that name the file
            images[i] = read_image_rgb(batch.paths[i]).to(device, non_blocking=True)
    return images


def cut_on_device(
    batch: EncodedBatch, groups: Sequence[ViewGroup], device: torch.device
) -> tuple[list[Tensor], list[Tensor]]:
    """Per view group, the batch's crops (N, count, 3, s, s) uint8 and boxes (N, count, 4) on
    ``device``, each image's views drawn from its seed as the workers would draw them."""
    per_image = [
        cut_views(image, groups, int(seed))
        for image, seed in zip(decode_on(batch, device), batch.seeds, strict=True)
    ]
    crops = [torch.stack([views[0][g] for views in per_image]) for g in range(len(groups))]
    boxes = [torch.stack([views[1][g] for views in per_image]) for g in range(len(groups))]
    return crops, [b.to(device, non_blocking=True) for b in boxes]


def _decode_one(data: Tensor, device: torch.device) -> Tensor | None:
    try:
        return decode_jpeg(data, mode="RGB", device=device)
    except RuntimeError:
        return None


def _is_jpeg(data: Tensor) -> bool:
    return bytes(data[:3].tolist()) == _JPEG_MAGIC
