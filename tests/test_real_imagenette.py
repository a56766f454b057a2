"""Each method, pretrained briefly on real ImageNet photographs (../shared/data/imagenette_64),
gives a better kNN classifier than its control: the same recipe, budget, seed and pipeline at
learning rate 0, so that the control's BatchNorm statistics come from the same augmented data and
only the learning differs.

A control is shared by the methods whose pipeline is the same (views, backbone, data, budget,
seed): at learning rate 0 the weights never move, so what the control measures (the random
weights with BN statistics of those views) does not depend on the loss. The fair random baseline
(BN statistics estimated on the training split) and the un-normalised random network are reported
beside them. Every kNN result is appended to ``results/real_imagenette.csv`` (``sslvision report``
prints it), so a run of ``make test-real`` leaves the measured table behind."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from sslvision.config import Config, load_config, to_dict
from sslvision.engine.trainer import resolve_views, train
from sslvision.eval.encoders import load_encoder
from sslvision.eval.knn_eval import run_knn
from sslvision.eval.results import append_result

REPO = Path(__file__).resolve().parents[1]
IMAGENETTE = REPO.parent / "shared" / "data" / "imagenette_64"
RESULTS_CSV = REPO / "results" / "real_imagenette.csv"
DATA = {"train_data": str(IMAGENETTE / "train"), "val_data": str(IMAGENETTE / "val")}
METHODS = ("simclr", "mocov2", "mocov3", "byol", "swav", "densecl", "pixpro")

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(
        not IMAGENETTE.is_dir(), reason=f"real data not found at {IMAGENETTE} (../shared/data)"
    ),
]


def _knn_top1(encoder: str, label: str, **extra: object) -> float:
    record = run_knn(load_encoder(encoder, image_size=64), **DATA, ks=(20,))
    append_result({**record, "label": label, **extra}, RESULTS_CSV)
    return record["knn_top1_k20"]


def _pipeline(cfg: Config) -> str:
    """What a zero-LR control depends on: the views, the backbone, the data, budget and seed."""
    views = [to_dict(group) for group in resolve_views(cfg)]
    fixed = {"views": views, "model": to_dict(cfg.model), "data": to_dict(cfg.data)}
    fixed.update(seed=cfg.seed, steps=cfg.train.max_steps, batch=cfg.train.batch_size)
    return json.dumps(fixed, sort_keys=True)


@pytest.fixture(scope="module")
def baselines() -> dict[str, float]:
    """The fair random baseline and the un-normalised network, for the report."""
    return {
        "fair random": _knn_top1("random", "random init, BN estimated on train (seed 0)"),
        "un-normalised random": _knn_top1("random-initial-bn", "random init, initial BN (seed 0)"),
    }


@pytest.fixture(scope="module")
def controls() -> dict[str, float]:
    """kNN top-1 of each pipeline's zero-LR control, filled as the tests need them."""
    return {}


def _pretrain_and_score(method: str, tmp_path: Path, load_benchmark, *extra: str) -> tuple:
    budget = load_benchmark("short_budget")  # the budget, shared with the short-budget study
    overrides = budget.budget_overrides(method, IMAGENETTE / "train", budget.default_precision())
    recipe = REPO / "configs" / method / "imagenette.yaml"
    cfg = load_config(recipe, [*overrides, f"output_dir={tmp_path}", *extra])
    started = time.perf_counter()
    result = train(cfg)
    seconds = round(time.perf_counter() - started, 1)
    label = f"{method}{' (learning rate 0)' if extra else ''}, {result.step} steps"
    top1 = _knn_top1(str(result.checkpoint), label, train_seconds=seconds)
    return cfg, top1, budget.MARGIN


@pytest.mark.parametrize("method", METHODS)
def test_pretraining_beats_its_zero_lr_control(
    method: str, baselines: dict, controls: dict, load_benchmark, tmp_path: Path
) -> None:
    cfg, pretrained, margin = _pretrain_and_score(method, tmp_path / "run", load_benchmark)
    key = _pipeline(cfg)
    if key not in controls:
        _, controls[key], _ = _pretrain_and_score(
            method, tmp_path / "control", load_benchmark, "optim.base_lr=0"
        )
    control = controls[key]
    print(
        f"Imagenette-64 kNN top-1 (k=20): {method} {pretrained:.4f}, zero-LR control "
        f"{control:.4f}, fair random {baselines['fair random']:.4f}, un-normalised random "
        f"{baselines['un-normalised random']:.4f}"
    )
    assert pretrained > control + margin
