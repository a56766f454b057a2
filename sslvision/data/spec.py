"""Datasets named by one string on the command line (used by the evaluators).

``synthetic`` is the embedded default; ``cifar10:ROOT`` / ``cifar100:ROOT`` read torchvision's
CIFAR python layout under ROOT; anything else is an ImageFolder directory of one split.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from sslvision.data.build import build_dataset


def dataset_from_spec(spec: str, split: str, image_size: int, *, seed: int = 0) -> Dataset:
    """Build the dataset that ``spec`` names, for ``split`` (train or val)."""
    if spec == "synthetic":
        return build_dataset("synthetic", "", split, image_size, seed=seed)
    kind, sep, root = spec.partition(":")
    if sep and kind in ("cifar10", "cifar100"):
        return build_dataset(kind, root, split, image_size)
    return build_dataset("folder", spec, split, image_size)
