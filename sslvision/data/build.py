"""Build a dataset from config values, and load ImageNet-subset class lists."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from torch.utils.data import Dataset

from sslvision.data.cifar import CIFARDataset
from sslvision.data.image_folder import ImageFolderDataset
from sslvision.data.synthetic import SyntheticShapesDataset
from sslvision.errors import ConfigError
from sslvision.registry import DATASETS

_CIFAR_TRAIN_FLAG = {"train": True, "val": False, "test": False}


@dataclass(frozen=True)
class DatasetRequest:
    """What :func:`build_dataset` was asked for; every registered factory takes one."""

    name: str
    path: str
    split: str
    image_size: int
    download: bool = False
    skip_corrupt: bool = False
    classes: Sequence[str] | None = None
    num_images: int = 5000
    seed: int = 0


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
    ``split`` picks the seed stream). ``name`` is a factory in
    :data:`sslvision.registry.DATASETS`: those below, or one registered in another module of
    ``sslvision.data``.
    """
    choices = DATASETS.names()
    if name not in choices:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(choices)}")
    request = DatasetRequest(
        name=name,
        path=path,
        split=split,
        image_size=image_size,
        download=download,
        skip_corrupt=skip_corrupt,
        classes=classes,
        num_images=num_images,
        seed=seed,
    )
    return DATASETS.get(name)(request)


@DATASETS.register("synthetic")
def synthetic(request: DatasetRequest) -> Dataset:
    """Seeded shapes drawn in memory; ``split`` picks the seed stream, ``path`` is unused."""
    return SyntheticShapesDataset(
        num_images=request.num_images,
        image_size=request.image_size,
        seed=request.seed,
        split=request.split,
    )


@DATASETS.register("folder")
def folder(request: DatasetRequest) -> Dataset:
    """An ImageFolder split directory at ``path``."""
    return ImageFolderDataset(
        request.path,
        image_size=request.image_size,
        skip_corrupt=request.skip_corrupt,
        classes=request.classes,
    )


@DATASETS.register("cifar10")
def cifar10(request: DatasetRequest) -> Dataset:
    """CIFAR-10 in torchvision's python layout under ``path``."""
    return _cifar(request, num_classes=10)


@DATASETS.register("cifar100")
def cifar100(request: DatasetRequest) -> Dataset:
    """CIFAR-100 in torchvision's python layout under ``path``."""
    return _cifar(request, num_classes=100)


def _cifar(request: DatasetRequest, num_classes: int) -> Dataset:
    if request.split not in _CIFAR_TRAIN_FLAG:
        raise ConfigError(
            f"unknown split {request.split!r} for {request.name}; "
            f"choose one of {', '.join(_CIFAR_TRAIN_FLAG)}"
        )
    return CIFARDataset(
        request.path,
        train=_CIFAR_TRAIN_FLAG[request.split],
        num_classes=num_classes,
        image_size=request.image_size,
        download=request.download,
    )


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
