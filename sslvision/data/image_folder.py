"""``root/<class>/<image>`` datasets (ImageNet, Imagenette, ImageNet subsets) as uint8 tensors."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from sslvision.data.decode import read_file_bytes, read_image_rgb, read_image_uint8
from sslvision.errors import ConfigError, CorruptImageError, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageFolderDataset(Dataset):
    """Images under ``root/<class>/`` (searched recursively), decoded to uint8 (3, S, S).

    Classes are the sorted names of the non-hidden sub-directories of ``root``; ``classes``
    keeps only the listed ones (e.g. the ImageNet-100 wnids) and every listed one must exist.

    With ``skip_corrupt=True`` an unreadable image is replaced by the next readable sample
    (wrapping around), warned about once and recorded in ``skipped``. ``skipped`` is per
    process: each DataLoader worker holds its own copy, so the main process only sees what it
    decoded itself.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int,
        skip_corrupt: bool = False,
        classes: Sequence[str] | None = None,
    ) -> None:
        if image_size <= 0:
            raise ConfigError(f"image_size must be a positive integer, got {image_size}")
        self.root = Path(root)
        self.image_size = image_size
        self.skip_corrupt = skip_corrupt
        self.classes: list[str] = _find_classes(self.root, classes)
        self.num_classes = len(self.classes)
        self.samples: list[tuple[str, int]] = _list_samples(self.root, self.classes)
        self.targets: list[int] = [label for _, label in self.samples]
        self.skipped: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._read(index, lambda path: read_image_uint8(path, self.image_size))

    def read_original(self, index: int) -> tuple[torch.Tensor, int]:
        """Sample ``index`` at its own size, uint8 (3, H, W), for crops cut from the original."""
        return self._read(index, read_image_rgb)

    def read_encoded(self, index: int) -> tuple[torch.Tensor, int, str]:
        """Sample ``index``'s file as bytes (1-D uint8), its label and its path, for decoding
        on the training device (``data.decode=device``)."""
        path, label = self.samples[index]
        return read_file_bytes(path), label, path

    def _read(self, index: int, read: Callable[[str], torch.Tensor]) -> tuple[torch.Tensor, int]:
        if not self.skip_corrupt:
            path, label = self.samples[index]
            return read(path), label
        for offset in range(len(self.samples)):
            path, label = self.samples[(index + offset) % len(self.samples)]
            if path in self.skipped:
                continue
            try:
                return read(path), label
            except CorruptImageError as error:
                self.skipped.add(path)
                warnings.warn(f"skipping corrupt image: {error}", stacklevel=2)
        raise RuntimeError(f"no readable image left in {self.root}: all {len(self)} are corrupt")


def _find_classes(root: Path, wanted: Sequence[str] | None) -> list[str]:
    """Sorted class folder names under ``root``, restricted to ``wanted`` when given."""
    if not root.is_dir():
        raise DataError(f"image folder root {root} does not exist or is not a directory")
    on_disk = sorted(
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    if not on_disk:
        raise DataError(
            f"image folder root {root} has no class sub-directories; "
            "expected the layout root/<class>/<image>"
        )
    if wanted is None:
        return on_disk
    duplicates = sorted(name for name, count in Counter(wanted).items() if count > 1)
    if duplicates:
        raise ConfigError(f"class list names some classes twice: {', '.join(duplicates)}")
    missing = sorted(set(wanted) - set(on_disk))
    if missing:
        raise DataError(
            f"{len(missing)} listed class(es) have no folder under {root}: {', '.join(missing)}"
        )
    return sorted(wanted)


def _list_samples(root: Path, classes: list[str]) -> list[tuple[str, int]]:
    """All image paths of every class, in a deterministic (sorted) order."""
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        class_dir = root / name
        paths = sorted(
            os.path.join(directory, file_name)
            for directory, _, file_names in os.walk(class_dir, followlinks=True)
            for file_name in file_names
            if file_name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not paths:
            raise DataError(
                f"class folder {class_dir} contains no images "
                f"(extensions: {' '.join(ext.lstrip('.') for ext in IMAGE_EXTENSIONS)})"
            )
        samples.extend((path, label) for path in paths)
    return samples
