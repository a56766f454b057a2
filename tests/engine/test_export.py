"""A pretrained backbone leaves sslvision as a plain state dict that torchvision and timm load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torch import nn

from sslvision.cli import main
from sslvision.config import config_from_dict
from sslvision.engine.export import default_export_path, export_backbone, pixels_path
from sslvision.engine.trainer import train
from sslvision.eval.encoders import load_encoder


def pretrain(
    tmp_path: Path, backbone: str, small_stem: bool = False, augment: dict | None = None
) -> Path:
    """A one-step SimCLR checkpoint of ``backbone`` on synthetic 32 px images."""
    cfg = config_from_dict(
        {
            "output_dir": str(tmp_path / "runs"),
            "data": {"dataset": "synthetic", "image_size": 32, "num_images": 16, "num_workers": 0},
            "augment": {"size": 32, **(augment or {})},
            "model": {"backbone": backbone, "small_stem": small_stem},
            "method": {"name": "simclr", "proj_hidden_dim": 16, "proj_output_dim": 8},
            "train": {"epochs": 1, "max_steps": 1, "batch_size": 4, "progress_bar": False},
        }
    )
    return train(cfg).checkpoint


def same_features(exported: nn.Module, checkpoint: Path) -> bool:
    """Whether ``exported`` computes what sslvision's evaluators compute from ``checkpoint``."""
    reference = load_encoder(str(checkpoint)).backbone.eval()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.allclose(exported.eval()(images), reference(images))


def test_torchvision_loads_the_export_with_only_the_classifier_missing(tmp_path: Path) -> None:
    checkpoint = pretrain(tmp_path, "resnet18")
    record = export_backbone(checkpoint)
    out = default_export_path(checkpoint)
    assert record["out"] == str(out) and out.name == "last.backbone.pt"
    weights = torch.load(out, weights_only=True)
    assert all(isinstance(tensor, torch.Tensor) for tensor in weights.values())
    assert record["tensors"] == len(weights) and record["step"] == 1

    model = torchvision.models.resnet18()
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    model.fc = nn.Identity()
    assert same_features(model, checkpoint)


def test_timm_loads_the_export_strictly(tmp_path: Path) -> None:
    checkpoint = pretrain(tmp_path, "timm:resnet18")
    record = export_backbone(checkpoint, tmp_path / "exported" / "timm_resnet18.pt")
    assert record["load_with"] == "timm.create_model('resnet18', num_classes=0)"
    model = timm.create_model("resnet18", num_classes=0)
    model.load_state_dict(torch.load(tmp_path / "exported" / "timm_resnet18.pt", weights_only=True))
    assert same_features(model, checkpoint)


def test_the_cli_exports_names_a_small_stem_and_prints_its_record(tmp_path: Path, capsys) -> None:
    checkpoint = pretrain(tmp_path, "resnet18", small_stem=True)
    out = tmp_path / "small_stem.pt"
    argv = ["export", str(checkpoint), "--out", str(out), "--json"]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("exported the resnet18 backbone of a simclr checkpoint (step 1)")
    assert "3x3 stride-1 conv1 and no max-pool" in printed[2]
    assert json.loads(printed[-1])["small_stem"] is True

    model = torchvision.models.resnet18()
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool, model.fc = nn.Identity(), nn.Identity()
    model.load_state_dict(torch.load(out, weights_only=True))
    assert same_features(model, checkpoint)


@pytest.mark.parametrize("content", [None, b"not a checkpoint"], ids=["missing", "unreadable"])
def test_a_bad_checkpoint_is_named(tmp_path: Path, capsys, content: bytes | None) -> None:
    path = tmp_path / "last.pt"
    if content is not None:
        path.write_bytes(content)
    assert main(["export", str(path)]) == 2
    assert str(path) in capsys.readouterr().err
    assert not default_export_path(path).exists()


@pytest.mark.parametrize("small_stem", [False, True])
def test_evaluators_read_an_exported_backbone(tmp_path: Path, small_stem: bool) -> None:
    checkpoint = pretrain(tmp_path, "resnet18", small_stem=small_stem)
    exported = export_backbone(checkpoint)["out"]
    encoder = load_encoder(exported, backbone="resnet18")
    assert encoder.method == "exported" and encoder.bn_statistics == "trained"
    assert same_features(encoder.backbone, checkpoint)  # the stem is read from conv1's shape


def test_an_export_that_does_not_fit_the_backbone_is_named(tmp_path: Path, capsys) -> None:
    exported = export_backbone(pretrain(tmp_path, "resnet18"))["out"]
    argv = ["knn", exported, "--backbone", "resnet34", "--train-data", "synthetic:20"]
    assert main([*argv, "--val-data", "synthetic:20"]) == 2
    assert "does not fit --backbone resnet34" in capsys.readouterr().err


def test_export_refuses_to_overwrite_its_checkpoint(tmp_path: Path, capsys) -> None:
    checkpoint = pretrain(tmp_path, "resnet18")
    before = checkpoint.read_bytes()
    assert main(["export", str(checkpoint), "--out", str(checkpoint)]) == 2
    assert "is the checkpoint being exported" in capsys.readouterr().err
    assert checkpoint.read_bytes() == before


def test_the_pixel_statistics_travel_with_checkpoint_and_export(tmp_path: Path) -> None:
    """Evaluators normalise as in pretraining, reading the statistics from the encoder; an
    export written before they were saved beside it gets ImageNet's, as it always did."""
    stats = {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3]}
    checkpoint = pretrain(tmp_path, "resnet18", augment=stats)
    assert load_encoder(str(checkpoint)).backbone.pixels.mean == (0.5, 0.4, 0.3)
    record = export_backbone(checkpoint)
    assert record["pixels"] == str(pixels_path(record["out"]))
    pixels = load_encoder(record["out"], backbone="resnet18").backbone.pixels
    assert pixels.mean == (0.5, 0.4, 0.3) and pixels.std == (0.25, 0.2, 0.3)
    pixels_path(record["out"]).unlink()
    pixels = load_encoder(record["out"], backbone="resnet18").backbone.pixels
    assert pixels.mean == (0.485, 0.456, 0.406) and pixels.std == (0.229, 0.224, 0.225)
