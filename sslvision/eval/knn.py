"""Weighted k-nearest-neighbour classification of frozen features.

The protocol of Wu, Xiong, Yu, Lin, "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination" (InstDisc), CVPR 2018, section 3.4, as used by DINO (Caron et al., ICCV 2021):
features are L2-normalised, the k training samples with the highest cosine similarity ``s_i`` to a
test sample vote for their class with weight ``exp(s_i / T)``, and the class with the largest summed
weight is the prediction.

The test set is processed in chunks, so the similarity matrix held at any time is
``chunk_size x num_train`` and a bank of a million features fits next to any test set.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

TOP5 = 5


def knn_classify(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 256,
) -> dict[int, dict[str, float]]:
    """Top-1 and top-5 accuracy (fractions in [0, 1]) of the weighted kNN vote for each k in ``ks``.

    The math runs in float32 on the device of ``train_features``; test chunks are moved there, so a
    bank on the GPU can serve a test set kept on the CPU. ``num_classes`` defaults to the largest
    label seen plus one. Details that change numbers:

    - k larger than the bank is clipped to the bank size; the result keeps the requested k as key.
    - With fewer than 5 classes, "top5" is top-``num_classes`` accuracy, which is 1.0.
    - Votes are scaled per test sample by ``exp(-max_sim / T)``, which leaves the ranking of
      classes unchanged but keeps small temperatures from overflowing float32.
    - Ties between classes with equal votes go to the lower class index, for top-1 and for the
      fifth place of top-5. Which of several equally similar bank samples fills the last of the k
      neighbour slots is left to ``torch.topk``.

    >>> bank = torch.eye(3).repeat(4, 1)
    >>> labels = torch.arange(3).repeat(4)
    >>> knn_classify(bank, labels, torch.eye(3), torch.arange(3), ks=(4,))
    {4: {'top1': 1.0, 'top5': 1.0}}
    """
    _check_features("train_features", train_features)
    _check_features("test_features", test_features)
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            "train and test features must have the same dimension, got "
            f"{train_features.shape[1]} and {test_features.shape[1]}"
        )
    _check_labels("train_labels", train_labels, len(train_features))
    _check_labels("test_labels", test_labels, len(test_features))
    ks = _checked_ks(ks)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    num_classes = _checked_num_classes(num_classes, train_labels, test_labels)

    device = train_features.device
    bank = F.normalize(train_features.float(), dim=1)
    bank_labels = train_labels.long()
    num_neighbours = {k: min(k, len(bank)) for k in ks}
    max_neighbours = max(num_neighbours.values())
    num_top5 = min(TOP5, num_classes)
    correct = {k: {"top1": 0, "top5": 0} for k in ks}

    for start in range(0, len(test_features), chunk_size):
        queries = test_features[start : start + chunk_size].to(device).float()
        targets = test_labels[start : start + chunk_size].to(device).long()
        similarity = F.normalize(queries, dim=1) @ bank.T
        top_similarity, top_index = similarity.topk(max_neighbours, dim=1)
        del similarity
        weights = ((top_similarity - top_similarity[:, :1]) / temperature).exp()
        neighbour_labels = bank_labels[top_index]
        for k in ks:
            n = num_neighbours[k]
            votes = torch.zeros(len(queries), num_classes, device=device)
            votes.scatter_add_(1, neighbour_labels[:, :n], weights[:, :n])
            ranked = votes.sort(dim=1, descending=True, stable=True).indices[:, :num_top5]
            hits = ranked == targets[:, None]
            correct[k]["top1"] += int(hits[:, 0].sum())
            correct[k]["top5"] += int(hits.any(dim=1).sum())

    num_test = len(test_features)
    return {k: {name: count / num_test for name, count in correct[k].items()} for k in ks}


def _check_features(name: str, features: Tensor) -> None:
    if features.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, dim), got shape {tuple(features.shape)}")
    if len(features) == 0:
        raise ValueError(f"{name} is empty: kNN needs at least one sample")
    if not features.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {features.dtype}")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _check_labels(name: str, labels: Tensor, num_samples: int) -> None:
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {labels.dtype}")
    if labels.shape != (num_samples,):
        raise ValueError(
            f"{name} must have shape ({num_samples},) to match the features, "
            f"got {tuple(labels.shape)}"
        )
    if int(labels.min()) < 0:
        raise ValueError(f"{name} must be non-negative class indices, found {int(labels.min())}")


def _checked_ks(ks: Sequence[int]) -> list[int]:
    if len(ks) == 0:
        raise ValueError("ks must name at least one number of neighbours")
    if any(isinstance(k, bool) or int(k) != k or k < 1 for k in ks):
        raise ValueError(f"every k in ks must be a positive integer, got {list(ks)}")
    return sorted({int(k) for k in ks})


def _checked_num_classes(num_classes: int | None, train_labels: Tensor, test_labels: Tensor) -> int:
    largest = max(int(train_labels.max()), int(test_labels.max()))
    if num_classes is None:
        return largest + 1
    if largest >= num_classes:
        raise ValueError(f"label {largest} is out of range for num_classes={num_classes}")
    return num_classes
