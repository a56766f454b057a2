"""Each method, pretrained briefly on real ImageNet photographs (../shared/data/imagenette_64),
gives a better kNN classifier than the random init it started from.

Every kNN result is appended to ``results/real_imagenette.csv`` (``sslvision report`` prints it),
so a run of ``make test-real`` leaves the measured table behind, the known gaps included."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sslvision.config import load_config
from sslvision.engine.trainer import train
from sslvision.eval.encoders import load_encoder
from sslvision.eval.knn_eval import run_knn
from sslvision.eval.results import append_result

REPO = Path(__file__).resolve().parents[1]
IMAGENETTE = REPO.parent / "shared" / "data" / "imagenette_64"
RESULTS_CSV = REPO / "results" / "real_imagenette.csv"
DATA = {"train_data": str(IMAGENETTE / "train"), "val_data": str(IMAGENETTE / "val")}

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(
        not IMAGENETTE.is_dir(), reason=f"real data not found at {IMAGENETTE} (../shared/data)"
    ),
]


# Measured at this budget (k=20 top-1, random init 0.366; results/real_imagenette.csv has the
# latest run): the methods below have not crossed the random init (open work, issues 3-5). The
# short-budget study (benchmarks/short_budget.py on a GPU, 1-3 seeds of 35 settings) found no
# setting that does: the best means are MoCo v3 0.375 (base lr 0.15), SwAV 0.357 (temperature
# 0.2), PixPro 0.333 (instance branch 0.5), BYOL 0.332 (no weight decay), DenseCL and MoCo v2 0.34
# at most.
# They do learn, later: MoCo v3 passes at 600 steps (0.406, 0.427), MoCo v2 and BYOL cross after
# about 1,400-1,600 steps of a 3,000-step schedule, SwAV after about 400-600 (seed-dependent).
# The README's "Tests" section has the measurements and why the first 150 steps go badly.
KNOWN_GAP = {
    "mocov2": "0.31 after 150 steps (3 seeds); above random only after ~1,600 steps",
    "mocov3": "0.366 after 150 steps (3 seeds), short of the margin; passes at 600",
    "byol": "0.32 after 150 steps (3 seeds); above random only after ~1,400 steps",
    "swav": "0.34 after 150 steps (3 seeds); above random after ~400-600 steps",
    "densecl": "0.32 after 150 steps (3 seeds); 0.35 after 600",
    "pixpro": "0.29 after 150 steps (3 seeds); 0.29-0.32 through 3,000 steps (2x2 map at 64 px)",
}
METHODS = [
    pytest.param(
        name, marks=pytest.mark.xfail(reason=f"known gap: {KNOWN_GAP[name]}, random 0.366")
    )
    if name in KNOWN_GAP
    else name
    for name in ("simclr", "mocov2", "mocov3", "byol", "swav", "densecl", "pixpro")
]


@pytest.fixture(scope="module")
def random_init_top1() -> float:
    record = run_knn(load_encoder("random", image_size=64), **DATA, ks=(20,))
    append_result({**record, "label": "random init (seed 0)"}, RESULTS_CSV)
    return record["knn_top1_k20"]


@pytest.mark.parametrize("method", METHODS)
def test_pretraining_beats_the_random_init(
    method: str, random_init_top1: float, load_benchmark, tmp_path: Path
) -> None:
    budget = load_benchmark("short_budget")  # the budget, shared with the short-budget study
    recipe = REPO / "configs" / method / "imagenette.yaml"
    train_dir = IMAGENETTE / "train"
    overrides = budget.budget_overrides(method, train_dir, budget.default_precision())
    cfg = load_config(recipe, [*overrides, f"output_dir={tmp_path}"])
    started = time.perf_counter()
    result = train(cfg)
    train_seconds = round(time.perf_counter() - started, 1)
    record = run_knn(load_encoder(str(result.checkpoint)), **DATA, ks=(20,))
    label = f"{method}, {result.step} steps of {cfg.train.batch_size}, {cfg.train.precision}"
    append_result({**record, "label": label, "train_seconds": train_seconds}, RESULTS_CSV)
    pretrained = record["knn_top1_k20"]
    print(
        f"Imagenette-64 kNN top-1 (k=20): {method} {pretrained:.4f}, random {random_init_top1:.4f}"
    )
    assert pretrained > random_init_top1 + budget.MARGIN
