"""SimCLR on real ImageNet photographs (../shared/data/imagenette_64) beats a random init."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslvision.config import load_config
from sslvision.engine.trainer import train
from sslvision.eval.encoders import load_encoder
from sslvision.eval.knn_eval import run_knn

REPO = Path(__file__).resolve().parents[1]
IMAGENETTE = REPO.parent / "shared" / "data" / "imagenette_64"

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(
        not IMAGENETTE.is_dir(), reason=f"real data not found at {IMAGENETTE} (../shared/data)"
    ),
]

# A CPU-sized budget: 32 px, 100 steps of 128 (about 1.4 epochs), about 3 minutes on 2 cores.
BUDGET = [
    f"data.path={IMAGENETTE / 'train'}",
    "data.image_size=32",
    "augment.size=32",
    "train.max_steps=100",
    "train.epochs=3",
    "train.progress_bar=false",
    "optim.warmup_epochs=0.2",
    "checkpoint.keep_every_epochs=0",
]


@pytest.mark.xfail(
    reason="known gap (issue 2): at this CPU budget SimCLR's kNN is still below the random init "
    "(measured 0.293 vs 0.349 after 160 steps); the random init's colour statistics win until "
    "the invariant features catch up",
    strict=False,
)
def test_simclr_imagenette_beats_random_init(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs/simclr/imagenette.yaml", [*BUDGET, f"output_dir={tmp_path}"])
    result = train(cfg)
    data = {"train_data": str(IMAGENETTE / "train"), "val_data": str(IMAGENETTE / "val")}
    pretrained = run_knn(load_encoder(str(result.checkpoint)), **data, ks=(20,))
    random_init = run_knn(load_encoder("random", image_size=32), **data, ks=(20,))
    print(
        f"Imagenette-64 kNN top-1 (k=20): SimCLR {pretrained['knn_top1_k20']:.4f}, "
        f"random init {random_init['knn_top1_k20']:.4f}"
    )
    assert pretrained["knn_top1_k20"] > random_init["knn_top1_k20"] + 0.02
