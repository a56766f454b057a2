from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from sslvision.eval.encoders import load_encoder

REPO = Path(__file__).resolve().parents[2]


def test_random_encoder_is_the_same_network_for_the_same_seed() -> None:
    first, second = load_encoder("random", seed=0), load_encoder("random", seed=0)
    other = load_encoder("random", seed=1)
    for (name, a), b in zip(
        first.backbone.state_dict().items(), second.backbone.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert not torch.equal(first.backbone.model.conv1.weight, other.backbone.model.conv1.weight)


def test_random_encoder_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    load_encoder("random")
    torch.testing.assert_close(torch.rand(3), expected)


def test_torchvision_weights_come_from_the_torch_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Published weights are read from where torchvision keeps them (``$TORCH_HOME``), offline."""
    planted = torchvision.models.resnet18(num_classes=1000).state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(planted, cache / "resnet18-f37072fd.pth")  # the file name torchvision looks for
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    encoder = load_encoder("ResNet18_Weights.IMAGENET1K_V1")
    for name, value in encoder.backbone.model.state_dict().items():
        assert torch.equal(value, planted[name]), name
    assert encoder.backbone.pixels.mean == (0.485, 0.456, 0.406) and encoder.method == "supervised"


_TIMM_LOADER = """
import sys, torch
from sslvision.eval.encoders import load_encoder
encoder = load_encoder("timm:test_resnet.r160_in1k", image_size=32)
backbone = encoder.backbone
torch.save({"state": backbone.model.state_dict(), "mean": backbone.pixels.mean}, sys.argv[1])
"""


def test_timm_weights_and_normalisation_come_from_the_hugging_face_cache(tmp_path: Path) -> None:
    """timm weights from an offline Hugging Face cache, normalised as that model was trained
    (this one with mean 0.5, not ImageNet's); a fresh process, as the cache is read at import."""
    planted = timm.create_model("test_resnet.r160_in1k", pretrained=False).state_dict()
    repo = tmp_path / "hub" / "models--timm--test_resnet.r160_in1k"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in planted.items()}, snapshot / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)

    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    out = tmp_path / "encoder.pt"
    subprocess.run([sys.executable, "-c", _TIMM_LOADER, str(out)], env=env, check=True)
    loaded = torch.load(out, weights_only=True)
    assert loaded["mean"] == (0.5, 0.5, 0.5)
    for name, value in loaded["state"].items():  # the classifier is dropped (num_classes=0)
        assert torch.equal(value, planted[name]), name
