"""SimCLR (Chen et al., ICML 2020): two augmented views, an MLP projection, NT-Xent.

``loss`` swaps the contrastive loss for one of its seed-paper variants on the same views and head:
DCL and DCLW (Yeh et al., ECCV 2022: the positive pair left out of the denominator) and SupCon
(Khosla et al., NeurIPS 2020: every same-label view is a positive; needs the dataset's labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
from torch import Tensor

from sslvision.augment.views import Views
from sslvision.backbones import Backbone
from sslvision.config import MethodConfig
from sslvision.errors import ConfigError
from sslvision.losses.dcl import dcl
from sslvision.losses.ntxent import nt_xent
from sslvision.losses.supcon import supcon
from sslvision.methods.base import Method
from sslvision.methods.registry import register_method
from sslvision.nn.heads import MLPHead

LOSSES = ("ntxent", "dcl", "dclw", "supcon")


@dataclass
class SimCLRConfig(MethodConfig):
    name: str = "simclr"
    temperature: float = 0.1
    proj_hidden_dim: int = 2048
    proj_output_dim: int = 128
    proj_layers: int = 2
    loss: str = "ntxent"  # ntxent | dcl | dclw | supcon
    dclw_sigma: float = 0.5  # DCLW's weighting temperature


@register_method
class SimCLR(Method):
    """Projects every view and averages the loss over all pairs of views (one pair for two)."""

    name = "simclr"
    config_class = SimCLRConfig
    default_recipe = "simclr"

    def __init__(self, cfg: SimCLRConfig, backbone: Backbone) -> None:
        super().__init__(cfg, backbone)
        if cfg.loss not in LOSSES:
            raise ConfigError(
                f"unknown method.loss '{cfg.loss}'. Valid choices: {', '.join(LOSSES)}."
            )
        if cfg.temperature <= 0:
            raise ConfigError(f"method.temperature must be positive, got {cfg.temperature}")
        self.projector = MLPHead(
            backbone.feature_dim, cfg.proj_hidden_dim, cfg.proj_output_dim, cfg.proj_layers
        )

    def pair_loss(self, z_a: Tensor, z_b: Tensor, labels: Tensor | None) -> Tensor:
        """The configured loss of two views' projections."""
        cfg = self.cfg
        if cfg.loss == "ntxent":
            return nt_xent(z_a, z_b, cfg.temperature)
        if cfg.loss in ("dcl", "dclw"):
            sigma = cfg.dclw_sigma if cfg.loss == "dclw" else None
            return dcl(z_a, z_b, cfg.temperature, weight_sigma=sigma)
        if labels is None:
            raise ValueError("method.loss=supcon needs labels; the engine passes the dataset's")
        return supcon(z_a, z_b, labels, cfg.temperature)

    def training_step(self, views: Views) -> dict[str, Tensor]:
        z = list(views.images.map(lambda x: self.projector(self.backbone(x))))
        pairs = list(combinations(range(len(z)), 2))
        losses = [self.pair_loss(z[i], z[j], views.labels) for i, j in pairs]
        return {"loss": torch.stack(losses).mean()}
