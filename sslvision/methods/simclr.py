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
from sslvision.methods.base import Method
from sslvision.methods.registry import register_method
from sslvision.nn.heads import MLPHead
from sslvision.registry import PAIR_LOSSES


@dataclass
class SimCLRConfig(MethodConfig):
    name: str = "simclr"
    temperature: float = 0.1
    proj_hidden_dim: int = 2048
    proj_output_dim: int = 128
    proj_layers: int = 2
    loss: str = "ntxent"  # a name registered in sslvision.methods.pair_losses
    dclw_sigma: float = 0.5  # DCLW's weighting temperature


@register_method
class SimCLR(Method):
    """Projects every view and averages the loss over all pairs of views (one pair for two)."""

    name = "simclr"
    config_class = SimCLRConfig
    default_recipe = "simclr"

    def __init__(self, cfg: SimCLRConfig, backbone: Backbone) -> None:
        super().__init__(cfg, backbone)
        self.loss_fn = PAIR_LOSSES.get(cfg.loss)
        if cfg.temperature <= 0:
            raise ConfigError(f"method.temperature must be positive, got {cfg.temperature}")
        self.projector = MLPHead(
            backbone.feature_dim, cfg.proj_hidden_dim, cfg.proj_output_dim, cfg.proj_layers
        )

    def pair_loss(self, z_a: Tensor, z_b: Tensor, labels: Tensor | None) -> Tensor:
        """The configured loss of two views' projections."""
        return self.loss_fn(z_a, z_b, labels, self.cfg)

    def training_step(self, views: Views) -> dict[str, Tensor]:
        z = list(views.images.map(lambda x: self.projector(self.backbone(x))))
        pairs = list(combinations(range(len(z)), 2))
        losses = [self.pair_loss(z[i], z[j], views.labels) for i, j in pairs]
        return {"loss": torch.stack(losses).mean()}
