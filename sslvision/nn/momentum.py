"""Momentum (exponential moving average) encoders: MoCo's key encoder, BYOL's target network.

The slow copy is never trained by gradients; after every optimiser step it moves a little towards
the online network, ``target = m * target + (1 - m) * online``. A momentum close to 1 keeps the
targets consistent from step to step (He et al. 2020, sec. 3.2), which is what makes a queue of old
keys (``sslvision.nn.queue``) or a bootstrapped target (Grill et al. 2020) usable.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

MOMENTUM_SCHEDULES = ("constant", "cosine")


def momentum_at(
    fraction: float, base: float, final: float = 1.0, schedule: str = "cosine"
) -> float:
    """The momentum after ``fraction`` (0 to 1, clamped) of training.

    ``"cosine"`` rises from ``base`` to ``final`` along half a cosine, as BYOL (Grill et al. 2020,
    sec. 3.2) and MoCo v3 do: early targets follow the online network quickly while it changes
    fast, late targets barely move. ``"constant"`` is MoCo v1/v2's fixed momentum.

    >>> momentum_at(0.0, 0.99), momentum_at(0.5, 0.99), momentum_at(1.0, 0.99)
    (0.99, 0.995, 1.0)
    >>> momentum_at(0.7, 0.999, schedule="constant")
    0.999
    """
    if schedule not in MOMENTUM_SCHEDULES:
        raise ValueError(
            f"unknown momentum schedule {schedule!r}; choose one of {', '.join(MOMENTUM_SCHEDULES)}"
        )
    if schedule == "constant":
        return base
    if math.isnan(fraction):
        raise ValueError("the training fraction of a momentum schedule is NaN")
    fraction = min(max(fraction, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * fraction) + 1.0) / 2.0


def momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters never receive gradients.

    Only :func:`ema_update_` changes it; freezing the parameters keeps them out of autograd, so a
    loss that uses both networks backpropagates into the online one only.

    >>> online = nn.Linear(3, 2)
    >>> target = momentum_copy(online)
    >>> any(p.requires_grad for p in target.parameters()), torch.equal(target.weight, online.weight)
    (False, True)
    """
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


def _matching_tensors(
    kind: str, target: dict[str, torch.Tensor], online: dict[str, torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The tensors of both modules paired by name; a clear error when the structures differ."""
    if target.keys() != online.keys():
        missing = sorted(online.keys() - target.keys())
        extra = sorted(target.keys() - online.keys())
        hint = (
            " (the online module looks wrapped, e.g. in DistributedDataParallel: pass .module)"
            if any(name.startswith("module.") for name in missing)
            else ""
        )
        raise ValueError(
            f"momentum target and online module have different {kind}: only online has "
            f"{missing[:5]}, only target has {extra[:5]}{hint}"
        )
    for name, tensor in online.items():
        if target[name].shape != tensor.shape:
            raise ValueError(
                f"momentum target and online module differ in {kind[:-1]} {name!r}: "
                f"shape {tuple(target[name].shape)} vs {tuple(tensor.shape)}"
            )
    names = list(online)
    return [target[name] for name in names], [online[name] for name in names]


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """Move ``target`` towards ``online``: parameters by EMA, buffers by plain copy.

    Every parameter becomes ``momentum * target + (1 - momentum) * online``. Buffers (BatchNorm
    running statistics, ``num_batches_tracked``) are copied; the MoCo authors' code averages the
    parameters only and lets the key encoder's own forward passes keep its statistics. Targets run
    in train mode, on batch statistics, so training is the same either way; only the target used
    in eval mode early in training, while its weights lag far behind, sees statistics that do not
    fit them. ``online`` must be the unwrapped module (not a DistributedDataParallel wrapper), with
    the same structure.

    >>> online, target = nn.Linear(2, 1), nn.Linear(2, 1)
    >>> ema_update_(target, online, momentum=0.0)
    >>> torch.equal(target.weight, online.weight)
    True
    """
    target_params, online_params = _matching_tensors(
        "parameters", dict(target.named_parameters()), dict(online.named_parameters())
    )
    target_buffers, online_buffers = _matching_tensors(
        "buffers", dict(target.named_buffers()), dict(online.named_buffers())
    )
    if target_params:
        # lerp_(end, w) = self + w * (end - self); with w = 1 - m that is m * self + (1 - m) * end,
        # and PyTorch's lerp is exact at both ends (w = 0 keeps self, w = 1 gives end).
        torch._foreach_lerp_(target_params, online_params, 1.0 - momentum)
    if target_buffers:
        torch._foreach_copy_(target_buffers, online_buffers)
