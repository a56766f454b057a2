"""The fair random baseline: BatchNorm statistics estimated on the evaluator's training split."""

from __future__ import annotations

import torch

from sslvision.backbones import PixelStatistics
from sslvision.eval.bn_statistics import estimate_bn_statistics
from sslvision.eval.encoders import load_encoder
from sslvision.eval.knn_eval import run_knn

PIXELS = PixelStatistics((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _batches(seed: int, count: int = 3, size: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(
        0, 256, (count * size, 3, 16, 16), dtype=torch.uint8, generator=generator
    )
    return [(chunk, torch.zeros(len(chunk), dtype=torch.long)) for chunk in images.split(size)]


def test_the_pass_is_deterministic_and_leaves_weights_bitwise_unchanged() -> None:
    first, second = load_encoder("random").backbone, load_encoder("random").backbone
    first.pixels = second.pixels = PIXELS
    weights = {k: v.clone() for k, v in first.named_parameters()}
    for model in (first, second):
        seen = estimate_bn_statistics(model, _batches(0), device="cpu")
        assert seen == 18
    for name, value in first.named_parameters():
        assert torch.equal(value, weights[name]), name
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert first.training and first.model.bn1.momentum == 0.1  # modes and momenta as they were


def test_the_statistics_are_the_cumulative_average_over_all_batches() -> None:
    """bn1's running mean is the mean of conv1's output over every image (equal-size batches)."""
    model = load_encoder("random").backbone
    model.pixels = PIXELS
    batches = _batches(1)
    estimate_bn_statistics(model, batches, device="cpu")
    pixels = torch.cat([x for x, _ in batches]).float().div(255).sub(0.5).div(0.25)
    with torch.no_grad():
        conv = model.model.conv1(pixels)
    expected = conv.mean(dim=(0, 2, 3))
    torch.testing.assert_close(model.model.bn1.running_mean, expected, rtol=1e-4, atol=1e-5)
    assert int(model.model.bn1.num_batches_tracked) == 3


def test_knn_of_random_estimates_bn_and_says_so_the_initial_one_stays_available() -> None:
    data = {"train_data": "synthetic:40", "val_data": "synthetic:20", "ks": (5,)}
    fair = run_knn(load_encoder("random", image_size=16), **data, num_workers=0)
    raw = run_knn(load_encoder("random-initial-bn", image_size=16), **data, num_workers=0)
    assert fair["bn_statistics"] == "estimated on train_data (40 images)"
    assert raw["bn_statistics"] == "initial (mean 0, variance 1)"
    assert fair["encoder"] == "random" and raw["encoder"] == "random-initial-bn"
