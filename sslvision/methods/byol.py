"""BYOL (Grill et al., NeurIPS 2020, "Bootstrap Your Own Latent").

An online network (backbone, projector, predictor) predicts the projection that a momentum
target network gives for the other view; no negatives. The loss is the normalised MSE of eq. 2,
symmetrised over the two views (L + L~ of section 3.1); the target's momentum rises from 0.996 to
1 on a cosine (section 3.2). The views are asymmetric (``byol`` recipe): blur always on the first,
solarisation only on the second.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from sslvision.augment.views import Views
from sslvision.backbones import Backbone
from sslvision.losses.byol import normalized_mse
from sslvision.methods.momentum import MomentumConfig, MomentumMethod
from sslvision.methods.registry import register_method
from sslvision.nn.heads import MLPHead


@dataclass
class BYOLConfig(MomentumConfig):
    name: str = "byol"
    momentum: float = 0.996
    momentum_schedule: str = "cosine"
    proj_hidden_dim: int = 4096
    proj_output_dim: int = 256
    pred_hidden_dim: int = 4096


@register_method
class BYOL(MomentumMethod):
    """Each view's prediction regresses the target projection of the other view."""

    name = "byol"
    config_class = BYOLConfig
    default_recipe = "byol"

    def __init__(self, cfg: BYOLConfig, backbone: Backbone) -> None:
        projector = MLPHead(backbone.feature_dim, cfg.proj_hidden_dim, cfg.proj_output_dim)
        super().__init__(cfg, backbone, projector)
        self.predictor = MLPHead(cfg.proj_output_dim, cfg.pred_hidden_dim, cfg.proj_output_dim)

    def training_step(self, views: Views) -> dict[str, Tensor]:
        images = views.images[:2]
        p1, p2 = images.map(lambda x: self.predictor(self.projector(self.backbone(x))))
        z1, z2 = self.teacher(images)
        return {"loss": normalized_mse(p1, z2) + normalized_mse(p2, z1)}
