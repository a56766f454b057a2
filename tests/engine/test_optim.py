from __future__ import annotations

import math

import pytest
import torch
from timm.optim import Lars
from torch import nn

from sslvision.config import OptimConfig
from sslvision.engine.optim import build_optimizer, param_groups, scaled_lr
from sslvision.errors import ConfigError


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


@pytest.mark.parametrize(
    ("scaling", "expected"),
    [("linear", 0.3 * 512 / 256), ("sqrt", 0.3 * math.sqrt(512)), ("none", 0.3)],
)
def test_scaled_lr(scaling: str, expected: float) -> None:
    cfg = OptimConfig(base_lr=0.3, lr_scaling=scaling)
    assert scaled_lr(cfg, 512) == pytest.approx(expected)


def test_unknown_lr_scaling_names_choices() -> None:
    with pytest.raises(ConfigError, match=r"'cubic'\. Valid choices: linear, sqrt, none"):
        scaled_lr(OptimConfig(lr_scaling="cubic"), 256)


def test_bias_and_norm_params_get_no_weight_decay() -> None:
    model = tiny_model()
    decay, no_decay = param_groups(model, OptimConfig(weight_decay=0.05))
    conv, norm, _, linear = model
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(conv.weight), id(linear.weight)}
    expected = {id(conv.bias), id(norm.weight), id(norm.bias), id(linear.bias)}
    assert {id(p) for p in no_decay["params"]} == expected


def test_exclusion_off_puts_everything_in_one_group() -> None:
    model = tiny_model()
    groups = param_groups(model, OptimConfig(exclude_bias_and_norm=False))
    assert len(groups) == 1 and len(groups[0]["params"]) == len(list(model.parameters()))


def test_frozen_params_are_left_out() -> None:
    model = tiny_model()
    model[0].requires_grad_(False)
    params = [id(p) for group in param_groups(model, OptimConfig()) for p in group["params"]]
    assert id(model[0].weight) not in params and id(model[0].bias) not in params
    assert len(params) == len(list(model.parameters())) - 2


@pytest.mark.parametrize(
    ("name", "kind"), [("sgd", torch.optim.SGD), ("lars", Lars), ("adamw", torch.optim.AdamW)]
)
def test_build_optimizer_at_scaled_lr(name: str, kind: type) -> None:
    cfg = OptimConfig(name=name, base_lr=0.2, weight_decay=0.01)
    optimizer = build_optimizer(tiny_model(), cfg, global_batch=128)
    assert isinstance(optimizer, kind)
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(0.1)] * 2
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]


def test_lars_adapts_decayed_weights_but_not_the_no_decay_group() -> None:
    """Timm's Lars scales only groups with weight decay: biases take the plain SGD step."""
    torch.manual_seed(0)
    layer = nn.Linear(8, 8)
    cfg = OptimConfig(name="lars", base_lr=0.5, lr_scaling="none", weight_decay=1e-4)
    optimizer = build_optimizer(layer, cfg, global_batch=256)
    assert optimizer.param_groups[1]["params"] == [layer.bias]
    assert optimizer.defaults["trust_coeff"] == cfg.trust_coefficient
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    layer.weight.grad = torch.ones_like(layer.weight)
    layer.bias.grad = torch.ones_like(layer.bias)
    optimizer.step()
    torch.testing.assert_close(layer.bias.detach(), bias - 0.5)
    plain_step = weight - 0.5 * (1 + 1e-4 * weight)
    assert not torch.allclose(layer.weight.detach(), plain_step, atol=1e-3)


def test_unknown_optimizer_names_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown optim\.name 'adam'\. Valid choices: sgd, lars, adamw"
    ):
        build_optimizer(tiny_model(), OptimConfig(name="adam"), global_batch=256)
