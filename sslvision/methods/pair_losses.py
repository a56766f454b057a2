"""The contrastive losses SimCLR can put on a pair of views, by ``method.loss``.

Each registers in :data:`sslvision.registry.PAIR_LOSSES` with one signature, ``(z_a, z_b,
labels, cfg)``, so that SimCLR picks one by name and a new variant is one decorated function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from sslvision.losses.dcl import dcl
from sslvision.losses.ntxent import nt_xent
from sslvision.losses.supcon import supcon
from sslvision.registry import PAIR_LOSSES

if TYPE_CHECKING:
    from sslvision.methods.simclr import SimCLRConfig


@PAIR_LOSSES.register("ntxent")
def ntxent_pair(z_a: Tensor, z_b: Tensor, labels: Tensor | None, cfg: SimCLRConfig) -> Tensor:
    """NT-Xent (Chen et al. 2020): the other view is the positive, the batch the negatives."""
    return nt_xent(z_a, z_b, cfg.temperature)


@PAIR_LOSSES.register("dcl")
def dcl_pair(z_a: Tensor, z_b: Tensor, labels: Tensor | None, cfg: SimCLRConfig) -> Tensor:
    """DCL (Yeh et al. 2022): the positive pair left out of the denominator."""
    return dcl(z_a, z_b, cfg.temperature)


@PAIR_LOSSES.register("dclw")
def dclw_pair(z_a: Tensor, z_b: Tensor, labels: Tensor | None, cfg: SimCLRConfig) -> Tensor:
    """DCLW: DCL with the positives weighted at temperature ``cfg.dclw_sigma``."""
    return dcl(z_a, z_b, cfg.temperature, weight_sigma=cfg.dclw_sigma)


@PAIR_LOSSES.register("supcon")
def supcon_pair(z_a: Tensor, z_b: Tensor, labels: Tensor | None, cfg: SimCLRConfig) -> Tensor:
    """SupCon (Khosla et al. 2020): every same-label view is a positive; needs the labels."""
    if labels is None:
        raise ValueError("method.loss=supcon needs labels; the engine passes the dataset's")
    return supcon(z_a, z_b, labels, cfg.temperature)
