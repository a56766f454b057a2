"""Learning-rate schedules: linear warmup, then cosine decay (Loshchilov and Hutter 2017) or
steps down by a factor at milestones (MoCo's linear probe: x0.1 at epochs 60 and 80)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR


@dataclass
class WarmupCosine:
    """Factor of the peak learning rate at optimiser step ``step`` (a picklable callable)."""

    warmup_steps: int
    total_steps: int
    min_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class WarmupStep:
    """Factor after linear warmup: ``gamma`` to the number of ``milestones`` (steps) passed."""

    warmup_steps: int
    milestones: tuple[int, ...]
    gamma: float = 0.1

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self.gamma ** sum(step >= milestone for milestone in self.milestones)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    min_ratio: float = 0.0,
    milestones: Sequence[int] = (),
) -> LambdaLR:
    """A per-step scheduler, cosine or (with ``milestones``, in steps) step decay by 0.1; its
    state (the step) goes into the checkpoint."""
    if milestones:
        return LambdaLR(optimizer, WarmupStep(warmup_steps, tuple(milestones)))
    return LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_ratio))
