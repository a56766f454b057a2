"""The kNN evaluation job: encoder -> features of both splits -> weighted kNN -> a result record."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

import sslvision
from sslvision.data.spec import dataset_from_spec
from sslvision.eval.encoders import Encoder
from sslvision.eval.features import extract_features
from sslvision.eval.knn import knn_classify
from sslvision.eval.results import flatten_knn


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
    features = {}
    for split, spec in (("train", train_data), ("val", val_data)):
        dataset = dataset_from_spec(spec, split, encoder.image_size)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
        )
        features[split] = extract_features(
            backbone, loader, device=device, mean=encoder.mean, std=encoder.std
        )
        num_classes = getattr(dataset, "num_classes", None)
    (train_x, train_y), (val_x, val_y) = features["train"], features["val"]
    result = knn_classify(
        train_x,
        train_y,
        val_x,
        val_y,
        ks=ks,
        temperature=temperature,
        num_classes=num_classes,
    )
    return {
        "evaluator": "knn",
        "encoder": encoder.spec,
        "method": encoder.method,
        "backbone": encoder.backbone.name,
        "train_data": train_data,
        "val_data": val_data,
        "image_size": encoder.image_size,
        "temperature": temperature,
        "num_train": len(train_y),
        "num_val": len(val_y),
        **flatten_knn(result),
        "seconds": round(time.perf_counter() - started, 2),
        "sslvision_version": sslvision.__version__,
    }
