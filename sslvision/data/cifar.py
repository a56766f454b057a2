"""CIFAR-10/100 held in memory as one uint8 (N, 3, S, S) tensor."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.transforms.v2.functional import resize

from sslvision.errors import ConfigError, DataError

_TORCHVISION_CLASSES = {10: CIFAR10, 100: CIFAR100}


class CIFARDataset(Dataset):
    """CIFAR from torchvision's python layout (``cifar-10-batches-py/``, ``cifar-100-python/``).

    torchvision only reads the pickled batches; the images are converted to a channels-first
    uint8 tensor (and resized when ``image_size`` != 32) once here, so items are plain views.
    """

    def __init__(
        self,
        root: str | Path,
        train: bool = True,
        num_classes: Literal[10, 100] = 10,
        image_size: int = 32,
        download: bool = False,
    ) -> None:
        if num_classes not in _TORCHVISION_CLASSES:
            raise ConfigError(f"CIFAR num_classes must be 10 or 100, got {num_classes}")
        if image_size <= 0:
            raise ConfigError(f"image_size must be a positive integer, got {image_size}")
        torchvision_class = _TORCHVISION_CLASSES[num_classes]
        expected_dir = Path(root).absolute() / torchvision_class.base_folder
        if not download and not expected_dir.is_dir():
            raise DataError(
                f"CIFAR-{num_classes} not found: expected the directory {expected_dir}; "
                "pass data.download=true to download it"
            )
        try:
            source = torchvision_class(str(root), train=train, download=download)
        except RuntimeError as error:
            raise DataError(
                f"CIFAR-{num_classes} files in {expected_dir} are missing or fail their md5 "
                f"check ({error}); pass data.download=true to download them again"
            ) from error

        images = torch.from_numpy(source.data).permute(0, 3, 1, 2).contiguous()
        if image_size != images.shape[-1]:
            images = resize(images, [image_size, image_size], antialias=True).contiguous()
        self.images = images
        self.targets: list[int] = [int(label) for label in source.targets]
        self.classes: list[str] = list(source.classes)
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.targets[index]
