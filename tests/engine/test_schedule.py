from __future__ import annotations

import io
import itertools
import math

import pytest
import torch
from torch import nn

from sslvision.engine.schedule import WarmupCosine, build_scheduler

PEAK = 0.8


def lrs_over(steps: int, *, warmup: int, total: int, min_ratio: float = 0.0) -> list[float]:
    """The learning rate each optimiser step uses, as the engine steps the scheduler."""
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=PEAK)
    scheduler = build_scheduler(
        optimizer, warmup_steps=warmup, total_steps=total, min_ratio=min_ratio
    )
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_warmup_starts_at_peak_over_warmup_and_reaches_peak() -> None:
    lrs = lrs_over(5, warmup=5, total=20)
    assert lrs[0] == pytest.approx(PEAK / 5)
    assert lrs == pytest.approx([PEAK * (i + 1) / 5 for i in range(5)])
    assert lrs[-1] == pytest.approx(PEAK)


def test_cosine_decays_monotonically_to_min_ratio() -> None:
    lrs = lrs_over(30, warmup=5, total=25, min_ratio=0.1)
    assert lrs[4] == lrs[5] == pytest.approx(PEAK)  # end of warmup, then the cosine's start
    decay = lrs[5:26]
    assert all(a > b for a, b in itertools.pairwise(decay))
    assert lrs[15] == pytest.approx(PEAK * (0.1 + 0.9 * 0.5))  # half way through the cosine
    assert lrs[25] == pytest.approx(PEAK * 0.1)
    assert lrs[26:] == pytest.approx([PEAK * 0.1] * 4)  # stays at the floor past the end


def test_no_warmup_starts_at_peak() -> None:
    schedule = WarmupCosine(warmup_steps=0, total_steps=10)
    assert schedule(0) == 1.0 and schedule(10) == pytest.approx(0.0)


def test_state_dict_round_trips_with_weights_only() -> None:
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=PEAK)
    scheduler = build_scheduler(optimizer, warmup_steps=3, total_steps=12, min_ratio=0.05)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    fresh_optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=PEAK)
    resumed = build_scheduler(fresh_optimizer, warmup_steps=3, total_steps=12, min_ratio=0.05)
    resumed.load_state_dict(state)
    assert resumed.last_epoch == scheduler.last_epoch == 7
    assert resumed.get_last_lr() == pytest.approx(scheduler.get_last_lr())
    for _ in range(3):
        optimizer.step()
        scheduler.step()
        fresh_optimizer.step()
        resumed.step()
        assert fresh_optimizer.param_groups[0]["lr"] == pytest.approx(
            optimizer.param_groups[0]["lr"]
        )


@pytest.mark.parametrize(("steps", "warmup"), [(5, 1), (37, 7), (1000, 100)])
def test_detection_fine_tuning_keeps_its_closed_form(steps: int, warmup: int) -> None:
    """Detection fine-tuning uses this schedule (no floor); its factors are the ones it used to
    compute itself, (s + 1) / w during warm-up, then 0.5 (1 + cos(pi (s - w) / (T - w))), to the
    last bit but for the order of pi * (s - w) / (T - w)."""
    schedule = WarmupCosine(warmup, steps)
    for step in range(steps):
        if step < warmup:
            expected = (step + 1) / warmup
        else:
            expected = 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        assert schedule(step) == pytest.approx(expected, rel=1e-14, abs=1e-15)
