"""Datasets named by one string on the command line (used by the evaluators).

``synthetic`` is the embedded default (``synthetic:N`` for N images); ``cifar10:ROOT`` and
``cifar100:ROOT`` read torchvision's CIFAR python layout under ROOT; ``subset:LIST:DIR`` is the
ImageFolder split DIR restricted to the classes of LIST (a bundled list such as ``imagenet100``
or a file of folder names); anything else is an ImageFolder directory of one split.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from sslvision.data.build import build_dataset, load_class_list
from sslvision.errors import ConfigError


def dataset_from_spec(spec: str, split: str, image_size: int, *, seed: int = 0) -> Dataset:
    """Build the dataset that ``spec`` names, for ``split`` (train or val)."""
    kind, sep, root = spec.partition(":")
    if kind == "synthetic":
        if sep and not root.isdigit():
            raise ConfigError(f"'{spec}': write 'synthetic' or 'synthetic:N' with N images")
        size = {"num_images": int(root)} if sep else {}  # else the dataset's own default
        return build_dataset("synthetic", "", split, image_size, seed=seed, **size)
    if sep and kind in ("cifar10", "cifar100"):
        return build_dataset(kind, root, split, image_size)
    if sep and kind == "subset":
        classes, sep, folder = root.partition(":")
        if not sep:
            raise ConfigError(
                f"'{spec}': write 'subset:LIST:DIR', e.g. subset:imagenet100:/data/train"
            )
        return build_dataset("folder", folder, split, image_size, classes=load_class_list(classes))
    return build_dataset("folder", spec, split, image_size)
