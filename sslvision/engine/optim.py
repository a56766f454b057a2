"""Optimisers (SGD, LARS, AdamW) with the learning-rate scaling rule made explicit."""

from __future__ import annotations

import math

import torch
from timm.optim import Lars
from torch import nn

from sslvision.config import LR_SCALINGS, OPTIMIZERS, OptimConfig
from sslvision.errors import ConfigError


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


def build_optimizer(model: nn.Module, cfg: OptimConfig, global_batch: int) -> torch.optim.Optimizer:
    """The configured optimiser at the scaled peak learning rate."""
    lr = scaled_lr(cfg, global_batch)
    groups = param_groups(model, cfg)
    # Multi-tensor steps: one pass over all parameters instead of a Python loop. SGD takes the
    # foreach path, not the fused one: fused SGD fails when a parameter starts getting gradients
    # after the others (SwAV's prototypes, frozen for the first steps).
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, foreach=True)
    if cfg.name == "lars":
        return Lars(groups, lr=lr, momentum=cfg.momentum, trust_coeff=cfg.trust_coefficient)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, fused=True)
    raise ConfigError(f"unknown optim.name '{cfg.name}'. Valid choices: {', '.join(OPTIMIZERS)}.")
