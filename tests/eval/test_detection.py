"""Detection transfer: AP against hand-worked cases, the detector's build, a run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from sslvision.cli import main
from sslvision.data.detection import DetectionDataset, DetectionRecord, voc_detection
from sslvision.errors import ConfigError
from sslvision.eval.detection import build_detector, coco_ap, run_detection
from sslvision.eval.encoders import load_encoder

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "det_fruits"


def two_objects() -> DetectionDataset:
    record = DetectionRecord(
        Path("unused.png"), ((0, 0, 10, 10), (20, 20, 30, 30)), (1, 1), (False, False)
    )
    return DetectionDataset([record], ["thing"], "hand-made")


def detections(*found: tuple[tuple[float, ...], float]) -> list[dict[str, torch.Tensor]]:
    boxes = torch.tensor([box for box, _ in found], dtype=torch.float32).reshape(-1, 4)
    scores = torch.tensor([score for _, score in found])
    return [{"boxes": boxes, "scores": scores, "labels": torch.ones(len(found), dtype=torch.int64)}]


def test_perfect_detections_score_one_and_none_score_zero() -> None:
    dataset = two_objects()
    perfect = detections(((0, 0, 10, 10), 0.9), ((20, 20, 30, 30), 0.8))
    assert coco_ap(dataset, perfect) == pytest.approx({"ap50": 1.0, "ap": 1.0})
    assert coco_ap(dataset, detections()) == {"ap50": 0.0, "ap": 0.0}
    shifted = detections(((6, 6, 16, 16), 0.9))  # IoU 16 / 184 with the first object
    assert coco_ap(dataset, shifted)["ap50"] == 0.0


def test_ap50_matches_the_hand_computed_interpolated_precision() -> None:
    """Scores rank hit, miss, hit: precision 1 up to recall 0.5, 2/3 up to recall 1. COCO averages
    the interpolated precision at 101 recall points: 51 of them at 1.0, 50 at 2/3."""
    found = detections(((0, 0, 10, 10), 0.9), ((40, 40, 50, 50), 0.8), ((20, 20, 30, 30), 0.7))
    assert math.isclose(coco_ap(two_objects(), found)["ap50"], (51 + 50 * 2 / 3) / 101)


def test_ignored_objects_neither_count_as_missed_nor_penalise() -> None:
    record = DetectionRecord(
        Path("unused.png"), ((0, 0, 10, 10), (20, 20, 30, 30)), (1, 1), (False, True)
    )
    dataset = DetectionDataset([record], ["thing"], "hand-made")
    assert coco_ap(dataset, detections(((0, 0, 10, 10), 0.9)))["ap50"] == pytest.approx(1.0)
    on_ignored = detections(((0, 0, 10, 10), 0.9), ((20, 20, 30, 30), 0.95))
    assert coco_ap(dataset, on_ignored)["ap50"] == pytest.approx(1.0)


@pytest.mark.parametrize("norm, layer", [("batch", nn.BatchNorm2d), ("frozen", FrozenBatchNorm2d)])
def test_the_detector_starts_from_the_encoders_weights(norm: str, layer: type) -> None:
    encoder = load_encoder("random", seed=3)
    detector = build_detector(encoder, 3, min_size=64, max_size=64, norm=norm)
    body = detector.backbone.body
    source = encoder.backbone.model
    assert torch.equal(body.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    assert torch.equal(body.bn1.running_var, source.bn1.running_var)
    assert isinstance(body.bn1, layer)
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad  # trainable_layers=3: layer2-4
    assert detector.roi_heads.box_predictor.cls_score.out_features == 4  # 3 classes + background


def test_a_small_stem_and_a_timm_backbone(tmp_path: Path) -> None:
    small = build_detector(load_encoder("random", small_stem=True), 1, min_size=64, max_size=64)
    assert small.backbone.body.conv1.kernel_size == (3, 3)
    assert isinstance(small.backbone.body.maxpool, nn.Identity)
    with pytest.raises(ConfigError, match="ResNet-style torchvision backbone, not 'timm:"):
        build_detector(
            load_encoder("random", backbone="timm:resnet18"), 1, min_size=64, max_size=64
        )


def squares(seed: int, count: int) -> dict:
    """``count`` 64 px images, each with one or two squares of class "red" or "green"."""
    generator = torch.Generator().manual_seed(seed)
    images = {}
    for i in range(count):
        objects = []
        for corner, name in ((4, "red"), (36, "green")):
            if i % 3 != ("red", "green").index(name):
                x, y = (int(v) for v in torch.randint(0, 8, (2,), generator=generator) + corner)
                objects.append((name, x, y, x + 20, y + 20, False))
        images[f"{seed}_{i}"] = (64, 64, objects)
    return images


@pytest.fixture
def squares_voc(tmp_path: Path, write_voc) -> Path:
    root = write_voc(tmp_path / "voc", squares(0, 8), "train")
    return write_voc(root, squares(1, 4), "test")


def test_run_detection_trains_and_reports_a_record(squares_voc: Path) -> None:
    train_set = voc_detection(squares_voc, "train")
    val_set = voc_detection(squares_voc, "test", classes=train_set.classes)
    record = run_detection(
        load_encoder("random"),
        train_set,
        val_set,
        steps=2,
        batch_size=2,
        min_size=64,
        max_size=64,
        num_workers=0,
        progress_bar=False,
    )
    assert record["evaluator"] == "detection" and record["classes"] == "green red"
    assert (record["num_train"], record["num_val"], record["steps"]) == (8, 4, 2)
    assert 0.0 <= record["ap50"] <= 1.0 and 0.0 <= record["ap"] <= record["ap50"]
    assert math.isfinite(record["last_loss"])
    reordered = DetectionDataset(val_set.records, ["red", "green"], "reordered")
    with pytest.raises(ValueError, match="train and val classes differ"):
        run_detection(load_encoder("random"), train_set, reordered)


def test_the_detect_command(squares_voc: Path, tmp_path: Path, capsys) -> None:
    common = ["--steps", "1", "--batch-size", "2", "--min-size", "64", "--max-size", "64"]
    common += ["--num-workers", "0", "--results-csv", str(tmp_path / "results.csv"), "--json"]
    assert main(["detect", "random", "--voc", str(squares_voc), *common]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("detection: AP50 ")
    assert json.loads(out[-1])["train_data"].endswith("train.txt")
    assert main(["detect", "random", *common]) == 2
    assert "give --voc ROOT, or both --coco-train and --coco-val" in capsys.readouterr().err
    diverging = ["--voc", str(squares_voc), *common, "--steps", "5", "--lr", "1e12"]
    assert main(["detect", "random", *diverging]) == 3
    assert "detection fine-tuning: the loss is nan at step" in capsys.readouterr().err


@pytest.mark.real
@pytest.mark.skipif(not REAL.is_dir(), reason=f"real data not found at {REAL} (../shared/data)")
def test_det_fruits_transfer_learns(tmp_path: Path) -> None:
    """Fine-tuned from the random init for 60 steps at 256 px (about 2 minutes on 2 cores), the
    detector finds the fruit of ../shared/data/det_fruits far above chance (0.19 measured)."""
    train_set = voc_detection(REAL, "train")
    val_set = voc_detection(REAL, "test", classes=train_set.classes)
    record = run_detection(
        load_encoder("random"),
        train_set,
        val_set,
        steps=60,
        min_size=256,
        max_size=256,
        progress_bar=False,
    )
    print(f"det_fruits AP50 after 60 steps from the random init: {record['ap50']:.4f}")
    assert record["ap50"] > 0.05
