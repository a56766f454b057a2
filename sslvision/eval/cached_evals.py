"""The evaluators that only read features: logistic regression and few-shot, as jobs.

Both take the features of a :class:`~sslvision.eval.feature_cache.FeatureStore`, so after one
extraction (by ``knn``, ``linear --protocol fast`` or either of these) each is seconds. Val is
handed over as a callable: the store reads it only when the hyperparameters have been chosen on
the held-out slice of train.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import sslvision
from sslvision.eval.encoders import Encoder
from sslvision.eval.feature_cache import FeatureStore
from sslvision.eval.fewshot import DEFAULT_SHOTS, few_shot
from sslvision.eval.logreg import DEFAULT_CS, logistic_regression


def _record(
    evaluator: str, store: FeatureStore, result: dict[str, Any], started: float
) -> dict[str, Any]:
    train = store.features("train")
    return {
        **store.record_header(evaluator),
        **result,
        "num_train": len(train.labels),
        "feature_cache": str(train.path or ""),
        "seconds": round(time.perf_counter() - started, 2),
        "sslvision_version": sslvision.__version__,
    }


def _val(store: FeatureStore) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    def read() -> tuple[torch.Tensor, torch.Tensor]:
        val = store.features("val")
        return val.features, val.labels

    return read


def run_logreg(
    encoder: Encoder,
    train_data: str,
    val_data: str,
    *,
    cs: Sequence[float] = DEFAULT_CS,
    select_on: str = "heldout",
    holdout_fraction: float = 0.1,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    num_workers: int = 2,
) -> dict[str, Any]:
    """L-BFGS logistic regression on ``encoder``'s features, C chosen on held-out train."""
    started = time.perf_counter()
    store = FeatureStore(
        encoder, train_data, val_data, cache_dir=cache_dir, num_workers=num_workers
    )
    train = store.features("train")
    result = logistic_regression(
        train.features,
        train.labels,
        _val(store),
        cs=cs,
        holdout_fraction=holdout_fraction,
        seed=seed,
        select_on=select_on,
        num_classes=store.num_classes,
    )
    return _record("logreg", store, result, started)


def run_fewshot(
    encoder: Encoder,
    train_data: str,
    val_data: str,
    *,
    shots: Sequence[int] = DEFAULT_SHOTS,
    draws: int = 5,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    num_workers: int = 2,
) -> dict[str, Any]:
    """kNN and logistic regression on ``shots`` labelled images a class, over ``draws`` draws."""
    started = time.perf_counter()
    store = FeatureStore(
        encoder, train_data, val_data, cache_dir=cache_dir, num_workers=num_workers
    )
    train = store.features("train")
    result = few_shot(
        train.features,
        train.labels,
        _val(store),
        shots=shots,
        draws=draws,
        seed=seed,
        holdout_fraction=holdout_fraction,
    )
    return _record("fewshot", store, result, started)
