"""The held-out slice of the training split on which every evaluator picks its hyperparameters.

A sweep that picks its best head (or C, or k) on the validation set and then reports that
head's validation accuracy reports the maximum of many noisy numbers: an optimistic one. Here the
choice is made on a slice of the *training* split, stratified by class and fixed by the seed;
only the chosen setting is evaluated on val, once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sslvision.errors import DataError

SELECT_ON = ("heldout", "val")  # "val": only to reproduce papers that selected on val


def holdout_split(labels: Tensor, fraction: float = 0.1, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(fit_index, heldout_index)`` into ``labels``: ``round(fraction * n_c)`` images of each
    class ``c`` (at least one where the class has two or more) are held out, drawn by ``seed``.

    Both index tensors are sorted, disjoint and cover ``labels``. The draw of a class depends only
    on the seed and that class's own images, so adding a class leaves the others' slices alone.

    >>> fit, held = holdout_split(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]), 0.25)
    >>> len(fit), len(held), sorted(set(torch.tensor([0] * 4 + [1] * 6)[held].tolist()))
    (7, 3, [0, 1])
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"the held-out fraction must be in (0, 1), got {fraction}")
    labels = torch.as_tensor(labels).long()
    if labels.numel() == 0:
        raise DataError("the training split is empty: nothing to hold out or fit")
    held: list[Tensor] = []
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().flatten()
        generator = torch.Generator().manual_seed(seed * 100_003 + label)
        count = round(fraction * len(members))
        count = max(count, 1) if len(members) >= 2 else 0
        held.append(members[torch.randperm(len(members), generator=generator)[:count]])
    heldout = torch.cat(held).sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[heldout] = False
    if not keep.any() or len(heldout) == 0:
        raise DataError(
            f"{len(labels)} training images leave nothing to fit on or to select with at a "
            f"held-out fraction of {fraction}; give more images per class"
        )
    return keep.nonzero().flatten(), heldout
