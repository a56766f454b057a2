"""Tests of feature extraction: order, shapes, normalisation, modes restored, clear errors."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from sslvision.backbones import PixelStatistics
from sslvision.eval.features import extract_features

MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)


def carrying_pixels(module: nn.Module) -> nn.Module:
    """The network with the pixel statistics attached that a Backbone carries."""
    module.pixels = PixelStatistics(MEAN, STD)
    return module


def tiny_net() -> nn.Sequential:
    torch.manual_seed(0)
    return carrying_pixels(
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
    )


def uint8_batches(sizes=(4, 3, 5)):
    generator = torch.Generator().manual_seed(1)
    batches, start = [], 0
    for size in sizes:
        images = torch.randint(0, 256, (size, 3, 8, 8), dtype=torch.uint8, generator=generator)
        batches.append((images, torch.arange(start, start + size)))
        start += size
    return batches


def test_features_keep_loader_order_and_match_a_manual_forward():
    net = tiny_net()
    batches = uint8_batches()

    features, labels = extract_features(net, batches, device="cpu")

    images = torch.cat([images for images, _ in batches]).float() / 255
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    net.eval()
    with torch.no_grad():
        expected = net((images - mean) / std)
    assert features.shape == (12, 4)
    assert features.dtype == torch.float32
    assert features.device.type == "cpu"
    assert torch.allclose(features, expected, atol=1e-6)
    assert labels.dtype == torch.int64
    assert labels.tolist() == list(range(12))


def test_backbone_runs_in_eval_mode_and_modes_are_restored():
    net = tiny_net()
    net.train()
    net[1].eval()  # a frozen BatchNorm inside a model in training mode
    running_mean = net[1].running_mean.clone()
    seen_modes = []
    net.register_forward_pre_hook(lambda module, _: seen_modes.append(module.training))

    extract_features(net, uint8_batches(), device="cpu")

    assert seen_modes == [False, False, False]
    assert [module.training for module in net] == [True, False, True, True, True]
    assert net.training
    assert torch.equal(net[1].running_mean, running_mean)


def test_eval_mode_is_kept_when_it_was_eval():
    net = tiny_net().eval()

    extract_features(net, uint8_batches(), device="cpu")

    assert not any(module.training for module in net.modules())


def fail_forward(*_) -> None:
    raise RuntimeError("boom")


def test_modes_are_restored_when_the_backbone_fails():
    net = tiny_net().train()
    batches = [(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.long))]
    net.register_forward_hook(fail_forward)

    with pytest.raises(RuntimeError, match="boom"):
        extract_features(net, batches, device="cpu")

    assert all(module.training for module in net.modules())


def test_features_can_train_a_linear_probe():
    features, labels = extract_features(tiny_net(), uint8_batches(), device="cpu")
    probe = nn.Linear(4, 12)

    nn.functional.cross_entropy(probe(features), labels).backward()

    assert not features.is_inference()
    assert probe.weight.grad is not None


@pytest.mark.parametrize(
    ("batches", "error", "message"),
    [
        ([], ValueError, "the loader yielded no batches"),
        ([(torch.zeros(2, 3, 8, 8), torch.zeros(2))], TypeError, "must yield uint8 images"),
        (
            [(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2))],
            ValueError,
            "images of shape (N, 3, H, W)",
        ),
        (
            [(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(3))],
            ValueError,
            "a batch has 2 images but 3 labels",
        ),
    ],
)
def test_bad_loader_output_is_rejected_with_a_clear_message(batches, error, message):
    with pytest.raises(error, match=re.escape(message)):
        extract_features(tiny_net(), batches, device="cpu")


def test_unpooled_backbone_output_is_rejected():
    dense = carrying_pixels(nn.Conv2d(3, 4, 3))

    with pytest.raises(ValueError, match="pooled features of shape"):
        extract_features(dense, uint8_batches(), device="cpu")


def test_mismatched_normalisation_is_rejected():
    with pytest.raises(ValueError, match="one value per channel, got 3 and 2"):
        PixelStatistics(MEAN, (0.2, 0.2))
    with pytest.raises(ValueError, match="std must be positive"):
        PixelStatistics(MEAN, (1, 0, 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_features_come_back_to_the_cpu_from_cuda():
    features, labels = extract_features(tiny_net().cuda(), uint8_batches(), device="cuda")

    assert features.device.type == "cpu"
    assert labels.device.type == "cpu"
