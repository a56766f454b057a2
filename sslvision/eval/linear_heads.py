"""Many linear classifiers trained together on the same batches of frozen features.

A learning-rate sweep of a linear probe usually costs one backbone pass per setting. Trained
together (as DINOv2's evaluation does), all heads see the same batch of features from one forward
of the backbone; each head has its own parameter group (learning rate, weight decay) and its own
loss term, so its gradient and its update are exactly those it would get trained alone from the
same seed and batch order: the summed loss adds nothing to one head's gradient from another's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

BN_EPS = 1e-6  # MAE's main_linprobe.py: BatchNorm1d(affine=False, eps=1e-6) before the head


@dataclass(frozen=True)
class HeadSpec:
    """One head's settings: its peak learning rate (already scaled by the batch size), weight
    decay, and whether a parameter-free BatchNorm normalises the features first (MAE)."""

    lr: float
    weight_decay: float = 0.0
    batch_norm: bool = False

    @property
    def name(self) -> str:
        """A stable, readable key: ``lr0.1_wd0`` or ``lr0.1_wd1e-06_bn``."""
        return f"lr{self.lr:g}_wd{self.weight_decay:g}{'_bn' if self.batch_norm else ''}"


class LinearHeads(nn.Module):
    """``len(specs)`` linear classifiers ``dim -> num_classes``, each initialised from ``seed``
    alone (weights N(0, 0.01), bias 0, as MoCo's ``main_lincls.py``), so head ``i`` of a sweep
    starts where the same head trained alone starts."""

    def __init__(self, dim: int, num_classes: int, specs: Sequence[HeadSpec], seed: int) -> None:
        super().__init__()
        if not specs:
            raise ValueError("LinearHeads needs at least one HeadSpec")
        self.specs = list(specs)
        self.heads = nn.ModuleList(_head(dim, num_classes, spec, seed) for spec in self.specs)

    def forward(self, features: Tensor) -> Tensor:
        """Logits of every head, ``(num_heads, batch, num_classes)``, in float32."""
        features = features.float()
        return torch.stack([head(features) for head in self.heads])

    def loss(self, features: Tensor, labels: Tensor) -> Tensor:
        """The heads' cross-entropies summed (not averaged: each head's gradient stays its own)."""
        logits = self(features)
        return sum(F.cross_entropy(head_logits, labels) for head_logits in logits)

    def param_groups(self, lars: bool = False) -> list[dict]:
        """One optimiser group per head with its own learning rate and weight decay.

        For LARS each head has two: its weight, always trust-ratio adapted, and its bias, neither
        adapted nor decayed, as MAE's LARS treats every ``ndim > 1`` tensor and the rest.
        """
        if not lars:
            return [
                {
                    "params": list(head.parameters()),
                    "lr": spec.lr,
                    "weight_decay": spec.weight_decay,
                }
                for head, spec in zip(self.heads, self.specs, strict=True)
            ]
        groups = []
        for head, spec in zip(self.heads, self.specs, strict=True):
            linear = head[-1]
            groups.append(
                {
                    "params": [linear.weight],
                    "lr": spec.lr,
                    "weight_decay": spec.weight_decay,
                    "always_adapt": True,
                }
            )
            groups.append({"params": [linear.bias], "lr": spec.lr, "weight_decay": 0.0})
        return groups


def _head(dim: int, num_classes: int, spec: HeadSpec, seed: int) -> nn.Sequential:
    linear = nn.Linear(dim, num_classes)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        linear.weight.normal_(0.0, 0.01, generator=generator)
        linear.bias.zero_()
    norm = nn.BatchNorm1d(dim, affine=False, eps=BN_EPS) if spec.batch_norm else nn.Identity()
    return nn.Sequential(norm, linear)


@torch.no_grad()
def head_accuracy(logits: Tensor, labels: Tensor, top: int = 1) -> Tensor:
    """Top-``top`` accuracy of each head, ``(num_heads,)``, from logits ``(heads, N, classes)``;
    ties go to the lower class index (a stable sort), as in the kNN evaluator."""
    top = min(top, logits.shape[-1])
    ranked = logits.sort(dim=-1, descending=True, stable=True).indices[..., :top]
    return (ranked == labels.to(logits.device)[None, :, None]).any(-1).float().mean(-1)
