"""Learning-rate schedule: linear warmup, then cosine decay (Loshchilov and Hutter 2017)."""

from __future__ import annotations

import math
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


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    min_ratio: float = 0.0,
) -> LambdaLR:
    """A per-step scheduler; its state (the step) goes into the checkpoint."""
    return LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_ratio))
