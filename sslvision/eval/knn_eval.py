"""The kNN evaluation job: encoder -> features of both splits -> weighted kNN -> a result record."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

import sslvision
from sslvision.backbones import Backbone
from sslvision.data.class_match import label_by_train_classes
from sslvision.data.spec import dataset_from_spec
from sslvision.eval.bn_statistics import estimate_bn_statistics
from sslvision.eval.encoders import Encoder
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

    The one path from a backbone to kNN accuracy, shared by ``sslvision knn`` and the in-training
    monitor so that both give the same number for the same weights and images.
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
) -> dict[str, Any]:
    """Evaluate ``encoder`` with the weighted kNN protocol and return one flat result record."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    started = time.perf_counter()
    backbone = encoder.backbone.to(device)
    train_set = dataset_from_spec(train_data, "train", encoder.image_size)
    val_set = label_by_train_classes(
        train_set, dataset_from_spec(val_data, "val", encoder.image_size)
    )
    train_loader, val_loader = (
        DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
        )
        for dataset in (train_set, val_set)
    )
    bn_statistics = "trained"
    if encoder.bn_statistics == "estimate":
        seen = estimate_bn_statistics(backbone, train_loader, device=device)
        bn_statistics = f"estimated on train_data ({seen} images)"
    elif encoder.bn_statistics == "initial":
        bn_statistics = "initial (mean 0, variance 1)"
    result = knn_on_splits(
        backbone,
        train_loader,
        val_loader,
        device=device,
        ks=ks,
        temperature=temperature,
        num_classes=getattr(train_set, "num_classes", None),
    )
    return {
        "evaluator": "knn",
        "encoder": encoder.spec,
        "method": encoder.method,
        "backbone": encoder.backbone.name,
        "train_data": train_data,
        "val_data": val_data,
        "image_size": encoder.image_size,
        "bn_statistics": bn_statistics,
        "temperature": temperature,
        "num_train": len(train_set),
        "num_val": len(val_set),
        **flatten_knn(result),
        "seconds": round(time.perf_counter() - started, 2),
        "sslvision_version": sslvision.__version__,
    }
