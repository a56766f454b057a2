"""SimCLR (Chen et al., ICML 2020): two augmented views, an MLP projection, NT-Xent."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
from torch import Tensor

from sslvision.augment.views import Views
from sslvision.backbones import Backbone
from sslvision.config import MethodConfig
from sslvision.losses.ntxent import NTXentLoss
from sslvision.methods.base import Method, apply_by_size
from sslvision.methods.registry import register_method
from sslvision.nn.heads import MLPHead


@dataclass
class SimCLRConfig(MethodConfig):
    name: str = "simclr"
    temperature: float = 0.1
    proj_hidden_dim: int = 2048
    proj_output_dim: int = 128
    proj_layers: int = 2


@register_method
class SimCLR(Method):
    """Projects every view and averages NT-Xent over all pairs of views (one pair for two views)."""

    name = "simclr"
    config_class = SimCLRConfig
    default_recipe = "simclr"

    def __init__(self, cfg: SimCLRConfig, backbone: Backbone) -> None:
        super().__init__(cfg, backbone)
        self.projector = MLPHead(
            backbone.feature_dim, cfg.proj_hidden_dim, cfg.proj_output_dim, cfg.proj_layers
        )
        self.criterion = NTXentLoss(cfg.temperature)

    def training_step(self, views: Views) -> dict[str, Tensor]:
        z = apply_by_size(lambda x: self.projector(self.backbone(x)), views.images)
        pairs = list(combinations(range(len(z)), 2))
        loss = torch.stack([self.criterion(z[i], z[j]) for i, j in pairs]).mean()
        return {"loss": loss}
