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

    Only :class:`PairedEMA` changes it; freezing the parameters keeps them out of autograd, so a
    loss that uses both networks backpropagates into the online one only.

    >>> online = nn.Linear(3, 2)
    >>> target = momentum_copy(online)
    >>> any(p.requires_grad for p in target.parameters()), torch.equal(target.weight, online.weight)
    (False, True)
    """
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


def _matching_names(
    kind: str, target: dict[str, torch.Tensor], online: dict[str, torch.Tensor]
) -> None:
    """A clear error unless both modules have the same tensor names and shapes."""
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


def _buffer_owners(module: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Each buffer's owning module and attribute name, by the buffer's full name."""
    return {
        f"{prefix}.{name}" if prefix else name: (owner, name)
        for prefix, owner in module.named_modules()
        for name, _ in owner.named_buffers(recurse=False)
    }


class PairedEMA:
    """``target`` following ``online`` by EMA, with the two modules' tensors paired once.

    Parameters are paired as objects: ``Module.to()`` (device, dtype, memory format) replaces a
    parameter's ``.data`` but keeps the ``Parameter``. Buffers are replaced outright by ``.to()``,
    so they are paired by owning module and name and looked up at each update. ``online`` must be
    the unwrapped module (not a DistributedDataParallel wrapper), with the same structure.

    >>> online, target = nn.Linear(2, 1), nn.Linear(2, 1)
    >>> PairedEMA(target, online).update_(momentum=0.0)
    >>> torch.equal(target.weight, online.weight)
    True
    """

    def __init__(self, target: nn.Module, online: nn.Module) -> None:
        target_params, online_params = (
            dict(target.named_parameters()),
            dict(online.named_parameters()),
        )
        _matching_names("parameters", target_params, online_params)
        _matching_names("buffers", dict(target.named_buffers()), dict(online.named_buffers()))
        self.target_params = [target_params[name] for name in online_params]
        self.online_params = list(online_params.values())
        target_owners, online_owners = _buffer_owners(target), _buffer_owners(online)
        self.target_buffers = [target_owners[name] for name in online_owners]
        self.online_buffers = list(online_owners.values())

    @torch.no_grad()
    def update_(self, momentum: float) -> None:
        """Parameters by EMA, buffers by plain copy.

        Every parameter becomes ``momentum * target + (1 - momentum) * online``. Buffers (BatchNorm
        running statistics, ``num_batches_tracked``) are copied; the MoCo authors' code averages
        the parameters only and lets the key encoder's own forward passes keep its statistics.
        Targets run in train mode, on batch statistics, so training is the same either way; only
        the target used in eval mode early in training, while its weights lag far behind, sees
        statistics that do not fit them.
        """
        if self.target_params:
            # lerp_(end, w) = self + w * (end - self); with w = 1 - m that is m * self + (1 - m) *
            # end, and PyTorch's lerp is exact at both ends (w = 0 keeps self, w = 1 gives end).
            torch._foreach_lerp_(self.target_params, self.online_params, 1.0 - momentum)
        if self.target_buffers:
            torch._foreach_copy_(
                [getattr(owner, name) for owner, name in self.target_buffers],
                [getattr(owner, name) for owner, name in self.online_buffers],
            )
