"""Evaluation splits labelled by the training split's class list, matched by name.

Each ImageFolder numbers its classes by its own sorted folder names, so a val folder with a
renamed or an extra class would shift every label after it and give a wrong accuracy without a
word. Evaluators label val with train's numbering instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from sslvision.errors import DataError


class RelabelledDataset(Dataset):
    """``dataset`` with its labels mapped through ``mapping`` (its label -> the new one)."""

    def __init__(self, dataset: Dataset, mapping: Sequence[int]) -> None:
        self.dataset = dataset
        self.mapping = list(mapping)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        return image, self.mapping[label]


def label_by_train_classes(train_set: Dataset, val_set: Dataset) -> Dataset:
    """``val_set`` labelled with ``train_set``'s class numbers, matched by class name.

    A val class that train lacks is an error naming it; a train class absent from val is a warning
    (its neighbours still vote). Data sets without class names (the synthetic set) pass as they are.
    """
    train_classes = getattr(train_set, "classes", None)
    val_classes = getattr(val_set, "classes", None)
    if train_classes is None or val_classes is None or list(train_classes) == list(val_classes):
        return val_set
    unknown = [name for name in val_classes if name not in train_classes]
    if unknown:
        raise DataError(
            f"val classes missing from the training split: {', '.join(unknown)}; "
            f"the training split has {', '.join(train_classes)}"
        )
    absent = [name for name in train_classes if name not in val_classes]
    if absent:
        warnings.warn(
            f"training classes absent from val: {', '.join(absent)}", UserWarning, stacklevel=2
        )
    return RelabelledDataset(val_set, [list(train_classes).index(name) for name in val_classes])
