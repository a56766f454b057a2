"""Optimisers (SGD, LARS, AdamW) with the learning-rate scaling rule made explicit.

Each optimiser is a factory registered in :data:`sslvision.registry.OPTIMIZERS`, which is where
``optim.name`` is validated; a new one is one decorated function here.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from timm.optim import Lars
from torch import nn

from sslvision.config import LR_SCALINGS, Config, OptimConfig
from sslvision.errors import ConfigError
from sslvision.registry import OPTIMIZERS


def scaled_lr(cfg: OptimConfig, global_batch: int) -> float:
    """The peak learning rate: ``base_lr x batch / 256`` (linear, Goyal et al. 2017), or sqrt."""
    if cfg.lr_scaling == "linear":
        return cfg.base_lr * global_batch / 256
    if cfg.lr_scaling == "sqrt":
        return cfg.base_lr * math.sqrt(global_batch)
    if cfg.lr_scaling == "none":
        return cfg.base_lr
    raise ConfigError(
        f"unknown optim.lr_scaling '{cfg.lr_scaling}'. Valid choices: {', '.join(LR_SCALINGS)}."
    )


def scaling_record(cfg: Config, world_size: int) -> dict[str, Any]:
    """How a run's batch and peak learning rate follow from its config and process count: the
    numbers that a resolved config alone does not show (the checkpoint and ``config.yaml`` keep
    them)."""
    tc = cfg.train
    global_batch = tc.batch_size * world_size * tc.grad_accum_steps
    return {
        "world_size": world_size,
        "batch_per_process": tc.batch_size,
        "grad_accum_steps": tc.grad_accum_steps,
        "global_batch": global_batch,
        "base_lr": cfg.optim.base_lr,
        "lr_scaling": cfg.optim.lr_scaling,
        "peak_lr": scaled_lr(cfg.optim, global_batch),
    }


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Split parameters so that biases and norm weights (1-d tensors) get no weight decay.

    For LARS a zero weight decay also switches off the trust-ratio adaptation (timm's Lars adapts
    only groups with weight decay), which is the exclusion the SimCLR and BYOL recipes use.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if cfg.exclude_bias_and_norm and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


# Multi-tensor steps: one pass over all parameters instead of a Python loop. SGD takes the foreach
# path, not the fused one: fused SGD fails when a parameter starts getting gradients after the
# others (SwAV's prototypes, frozen for the first steps).
@OPTIMIZERS.register("sgd")
def sgd(groups: list[dict], lr: float, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD with momentum."""
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, foreach=True)


@OPTIMIZERS.register("lars")
def lars(groups: list[dict], lr: float, cfg: OptimConfig) -> torch.optim.Optimizer:
    """LARS (You et al. 2017), timm's implementation."""
    return Lars(groups, lr=lr, momentum=cfg.momentum, trust_coeff=cfg.trust_coefficient)


@OPTIMIZERS.register("adamw")
def adamw(groups: list[dict], lr: float, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW, fused."""
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, fused=True)


def build_optimizer(model: nn.Module, cfg: OptimConfig, global_batch: int) -> torch.optim.Optimizer:
    """The configured optimiser at the scaled peak learning rate."""
    factory = OPTIMIZERS.get(cfg.name)
    return factory(param_groups(model, cfg), scaled_lr(cfg, global_batch), cfg)
