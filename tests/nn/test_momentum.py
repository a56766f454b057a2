"""Tests of the momentum (EMA) encoder helpers: closed forms, buffers, gradients, schedules."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from sslvision.nn.momentum import PairedEMA, momentum_at, momentum_copy


def small_net(seed: int) -> nn.Module:
    """A network with parameters and BN buffers, initialised reproducibly from ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def parameters_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_constant_momentum_from_fixed_online_weights_matches_closed_form():
    online, target = small_net(0), small_net(1)
    start, fixed = parameters_of(target), parameters_of(online)
    momentum, steps = 0.9, 7
    ema = PairedEMA(target, online)
    for _ in range(steps):
        ema.update_(momentum)
    decay = momentum**steps
    for name, p in target.named_parameters():
        expected = decay * start[name] + (1 - decay) * fixed[name]
        torch.testing.assert_close(p, expected, rtol=1e-5, atol=1e-6)


def test_changing_online_weights_match_an_explicit_loop():
    online = small_net(0)
    target = momentum_copy(online)
    expected = {name: p.double() for name, p in parameters_of(target).items()}
    generator = torch.Generator().manual_seed(3)
    momenta = [0.5, 0.9, 0.99, 0.0, 1.0, 0.7]
    ema = PairedEMA(target, online)
    for momentum in momenta:
        with torch.no_grad():
            for p in online.parameters():
                p.add_(torch.randn(p.shape, generator=generator))
        ema.update_(momentum)
        for name, p in online.named_parameters():
            expected[name] = momentum * expected[name] + (1 - momentum) * p.detach().double()
    for name, p in target.named_parameters():
        torch.testing.assert_close(p.double(), expected[name], rtol=1e-5, atol=1e-6)


def test_buffers_are_copied_not_averaged():
    online, target = small_net(0), small_net(1)
    online.train()
    for _ in range(3):
        online(torch.randn(8, 4))
    PairedEMA(target, online).update_(momentum=0.99)
    for (name, t_buf), (_, o_buf) in zip(
        target.named_buffers(), online.named_buffers(), strict=True
    ):
        assert torch.equal(t_buf, o_buf), name
    assert int(target[1].num_batches_tracked) == 3


def test_momentum_copy_is_independent_and_frozen():
    online = small_net(0)
    target = momentum_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        assert torch.equal(t, o)
        assert t.data_ptr() != o.data_ptr()


def test_no_gradient_reaches_the_target_through_a_loss_using_both():
    online = small_net(0)
    target = momentum_copy(online)
    x = torch.randn(8, 4)
    loss = (online(x) - target(x)).pow(2).sum() + target(x).sum()
    loss = loss + online(x).sum()
    loss.backward()
    assert all(p.grad is None for p in target.parameters())
    assert all(p.grad is not None for p in online.parameters())
    # And the update itself, under no_grad, leaves the frozen target out of autograd.
    PairedEMA(target, online).update_(0.9)
    assert all(not p.requires_grad and p.grad is None for p in target.parameters())


def test_momentum_zero_copies_and_one_leaves_unchanged():
    online, target = small_net(0), small_net(1)
    before = parameters_of(target)
    PairedEMA(target, online).update_(momentum=1.0)
    for name, p in target.named_parameters():
        assert torch.equal(p, before[name])
    PairedEMA(target, online).update_(momentum=0.0)
    for (name, t), (_, o) in zip(target.named_parameters(), online.named_parameters(), strict=True):
        assert torch.equal(t, o), name


def test_mismatched_structures_are_rejected_clearly():
    online = small_net(0)
    with pytest.raises(ValueError, match="different parameters"):
        PairedEMA(nn.Sequential(nn.Linear(4, 6)), online)
    wider = nn.Sequential(nn.Linear(4, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3))
    with pytest.raises(ValueError, match="shape"):
        PairedEMA(wider, online)
    no_stats = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6, track_running_stats=False), nn.ReLU(), nn.Linear(6, 3)
    )
    with pytest.raises(ValueError, match="different buffers"):
        PairedEMA(no_stats, online)


def test_a_wrapped_online_module_gets_a_hint():
    online = small_net(0)
    wrapper = nn.Module()
    wrapper.module = online
    with pytest.raises(ValueError, match=r"pass \.module"):
        PairedEMA(momentum_copy(online), wrapper)


def test_pairing_survives_moving_both_modules_after_it():
    """``.to()`` keeps Parameter objects but replaces buffers: both must still be updated."""
    online = small_net(0)
    target = momentum_copy(online)
    ema = PairedEMA(target, online)
    online.double()
    target.double()
    online.train()
    online(torch.randn(8, 4, dtype=torch.float64))
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    ema.update_(momentum=0.0)
    for (name, t), (_, o) in zip(target.named_parameters(), online.named_parameters(), strict=True):
        assert t.dtype == torch.float64 and torch.equal(t, o), name
    for (name, t), (_, o) in zip(target.named_buffers(), online.named_buffers(), strict=True):
        assert torch.equal(t, o), name
    assert int(target[1].num_batches_tracked) == 1


def test_pairing_survives_a_memory_format_move():
    """The engine moves the model to channels_last: BN buffers are replaced, still paired."""
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    teacher = momentum_copy(conv)
    ema = PairedEMA(teacher, conv)
    conv.to(memory_format=torch.channels_last)
    teacher.to(memory_format=torch.channels_last)
    conv.train()
    conv(torch.randn(2, 3, 6, 6))
    ema.update_(momentum=0.5)
    assert torch.equal(teacher[1].running_mean, conv[1].running_mean)
    assert teacher[0].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("base", "final"), [(0.99, 1.0), (0.996, 1.0), (0.9, 0.99)])
def test_cosine_schedule_endpoints_midpoint_and_monotonic(base, final):
    assert momentum_at(0.0, base, final) == pytest.approx(base)
    assert momentum_at(1.0, base, final) == pytest.approx(final)
    assert momentum_at(0.5, base, final) == pytest.approx((base + final) / 2)
    values = [momentum_at(i / 100, base, final) for i in range(101)]
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert values[1] < values[50] < values[99]


def test_cosine_schedule_matches_byol_formula_and_clamps():
    base = 0.996
    for fraction in (0.1, 0.3, 0.77):
        expected = 1 - (1 - base) * (math.cos(math.pi * fraction) + 1) / 2
        assert momentum_at(fraction, base) == pytest.approx(expected)
    assert momentum_at(-0.5, base) == pytest.approx(base)
    assert momentum_at(1.5, base) == pytest.approx(1.0)


def test_constant_schedule_and_unknown_schedule():
    assert momentum_at(0.0, 0.999, schedule="constant") == 0.999
    assert momentum_at(0.8, 0.999, schedule="constant") == 0.999
    with pytest.raises(ValueError, match=r"constant, cosine"):
        momentum_at(0.5, 0.99, schedule="linear")
