"""The kNN evaluation job: encoder -> features of both splits -> weighted kNN -> a result record."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import sslvision
from sslvision.backbones import Backbone
from sslvision.eval.encoders import Encoder
from sslvision.eval.feature_cache import FeatureStore
from sslvision.eval.features import extract_features
from sslvision.eval.knn import knn_classify
from sslvision.eval.results import flatten_knn


def knn_on_splits(
    backbone: Backbone,
    train_batches: Iterable[tuple[Tensor, Tensor]],
    val_batches: Iterable[tuple[Tensor, Tensor]],
    *,
    device: torch.device,
    ks: Sequence[int],
    temperature: float,
    num_classes: int | None,
    progress: bool | None = None,
) -> dict[int, dict[str, float]]:
    """Features of both splits' uint8 batches, then the weighted kNN vote of val on train.

    The in-training monitor's path from a backbone to kNN accuracy: the same extraction and vote
    as ``sslvision knn`` (:func:`run_knn`, through a :class:`FeatureStore`), so that both give the
    same number for the same weights and images.
    """
    train_x, train_y = extract_features(backbone, train_batches, device=device, progress=progress)
    val_x, val_y = extract_features(backbone, val_batches, device=device, progress=progress)
    return knn_classify(
        train_x, train_y, val_x, val_y, ks=ks, temperature=temperature, num_classes=num_classes
    )


def run_knn(
    encoder: Encoder,
    train_data: str,
    val_data: str,
    *,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
    batch_size: int = 256,
    num_workers: int = 2,
    device: str | torch.device | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``encoder`` with the weighted kNN protocol and return one flat result record.

    Features come from a :class:`FeatureStore`: with ``cache_dir`` they are read from there when
    the same encoder saw the same images before, and kept there otherwise.
    """
    started = time.perf_counter()
    store = FeatureStore(
        encoder,
        train_data,
        val_data,
        cache_dir=cache_dir,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
    )
    train, val = store.features("train"), store.features("val")
    result = knn_classify(
        train.features,
        train.labels,
        val.features,
        val.labels,
        ks=ks,
        temperature=temperature,
        num_classes=store.num_classes,
    )
    return {
        **store.record_header("knn"),
        "temperature": temperature,
        "num_train": len(store.train_set),
        "num_val": len(store.val_set),
        **flatten_knn(result),
        "feature_cache": str(train.path or ""),
        "seconds": round(time.perf_counter() - started, 2),
        "sslvision_version": sslvision.__version__,
    }
