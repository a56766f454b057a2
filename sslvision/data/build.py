"""Build a dataset from config values, and load ImageNet-subset class lists."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from torch.utils.data import Dataset

from sslvision.config import DATASET_NAMES
from sslvision.data.cifar import CIFARDataset
from sslvision.data.image_folder import ImageFolderDataset
from sslvision.data.synthetic import SyntheticShapesDataset
from sslvision.errors import ConfigError

_CIFAR_TRAIN_FLAG = {"train": True, "val": False, "test": False}


def build_dataset(
    name: str,
    path: str,
    split: str,
    image_size: int,
    *,
    download: bool = False,
    skip_corrupt: bool = False,
    classes: Sequence[str] | None = None,
    num_images: int = 5000,
    seed: int = 0,
) -> Dataset:
    """The dataset ``name`` for ``split``; every dataset yields ``(uint8 (3, S, S), label)``.

    ``path`` is the split directory itself for "folder" (e.g. ``imagenette_64/train``), the
    root holding the python-layout batches for CIFAR, and ignored for "synthetic" (whose
    ``split`` picks the seed stream).
    """
    if name == "synthetic":
        return SyntheticShapesDataset(
            num_images=num_images, image_size=image_size, seed=seed, split=split
        )
    if name == "folder":
        return ImageFolderDataset(
            path, image_size=image_size, skip_corrupt=skip_corrupt, classes=classes
        )
    if name in ("cifar10", "cifar100"):
        if split not in _CIFAR_TRAIN_FLAG:
            raise ConfigError(
                f"unknown split {split!r} for {name}; choose one of {', '.join(_CIFAR_TRAIN_FLAG)}"
            )
        return CIFARDataset(
            path,
            train=_CIFAR_TRAIN_FLAG[split],
            num_classes=10 if name == "cifar10" else 100,
            image_size=image_size,
            download=download,
        )
    raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")


def load_class_list(name_or_path: str) -> list[str]:
    """Class folder names from a bundled list (e.g. "imagenet100", "imagenette") or a file.

    The file holds one name per line; blank lines and ``#`` comments are ignored.
    """
    bundled = resources.files("sslvision.data") / "class_lists" / f"{name_or_path}.txt"
    if bundled.is_file():
        text, source = bundled.read_text(), f"bundled class list {name_or_path!r}"
    elif Path(name_or_path).is_file():
        text, source = Path(name_or_path).read_text(), f"class list file {name_or_path}"
    else:
        raise ConfigError(
            f"class list {name_or_path!r} is neither a bundled list "
            f"({', '.join(bundled_class_lists())}) nor an existing file"
        )
    names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    names = [name for name in names if name]
    if not names:
        raise ConfigError(f"{source} contains no class names")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ConfigError(f"{source} lists some classes twice: {', '.join(duplicates)}")
    return names


def bundled_class_lists() -> list[str]:
    """Names accepted by ``load_class_list`` without a path."""
    directory = resources.files("sslvision.data") / "class_lists"
    return sorted(
        entry.name[: -len(".txt")] for entry in directory.iterdir() if entry.name.endswith(".txt")
    )
