from __future__ import annotations

import torch

from sslvision.eval.encoders import load_encoder


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
