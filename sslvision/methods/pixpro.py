"""PixPro (Xie, Lin, Zhang, Cao, Lin, Hu, CVPR 2021, "Propagate Yourself: Exploring Pixel-Level
Consistency for Unsupervised Visual Representation Learning").

BYOL-style at the pixel level: a pixel head (1x1 conv, BN, ReLU, 1x1 conv) projects every cell of
the backbone's last feature map; on the online side the pixel propagation module smooths each cell
with its similar cells (eqs. 3-4), and the result is pulled towards the momentum encoder's pixel
feature of every cell of the other view that shows the same place (normalised distance below
``pos_threshold``, eq. 1), symmetrically over the two views (eq. 5). Which cells correspond comes
from the views' crop boxes and flips, so the views must come from :class:`ViewPipeline`. The
momentum rises from 0.99 to 1 on a cosine. The total is scaled by 2, as in the authors' code (their
-2 cos is BYOL's 2 - 2 cos less its constant), which keeps their LARS recipe's effective step for
the biases and norms that LARS does not adapt, and puts the two terms on BYOL's scale.

With ``instance_weight > 0`` (PixPro+ in the paper) an instance branch is added: a BYOL projector
on the pooled features (mirrored by the teacher) and a predictor, with BYOL's symmetric normalised
MSE weighted by ``instance_weight``. The authors' code projects and predicts every cell with 1x1
convolutions and pools after; here the heads work on the pooled features, as in BYOL.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sslvision.augment.views import Views
from sslvision.backbones import Backbone
from sslvision.errors import ConfigError
from sslvision.losses.byol import normalized_mse
from sslvision.losses.pixpro import pixpro_loss
from sslvision.methods.momentum import MomentumConfig, MomentumMethod
from sslvision.methods.registry import register_method
from sslvision.nn.correspondence import feature_grid, positive_pairs
from sslvision.nn.heads import ConvHead, MLPHead
from sslvision.nn.propagation import TRANSFORM_LAYERS, PixelPropagation


@dataclass
class PixProConfig(MomentumConfig):
    name: str = "pixpro"
    momentum: float = 0.99
    momentum_schedule: str = "cosine"
    proj_hidden_dim: int = 4096  # the pixel head (and the instance projector)
    proj_output_dim: int = 256
    gamma: float = 2.0  # sharpness of the propagation similarity (eq. 4)
    transform_layers: int = 1  # g of eq. 3: 0 identity, 1 a 1x1 conv, 2 conv-BN-ReLU-conv
    pos_threshold: float = 0.7  # positive pairs: normalised distance below this (eq. 1)
    instance_weight: float = 0.0  # > 0 adds the instance branch (PixPro+)
    pred_hidden_dim: int = 4096  # the instance branch's predictor


@register_method
class PixPro(MomentumMethod):
    """Pixel-to-propagation consistency between the two views, plus an optional instance term."""

    name = "pixpro"
    config_class = PixProConfig
    default_recipe = "byol"  # the authors train with BYOL's asymmetric augmentation

    def __init__(self, cfg: PixProConfig, backbone: Backbone) -> None:
        if cfg.gamma <= 0:
            raise ConfigError(f"method.gamma must be positive, got {cfg.gamma}")
        if cfg.transform_layers not in TRANSFORM_LAYERS:
            raise ConfigError(
                f"method.transform_layers must be one of {', '.join(map(str, TRANSFORM_LAYERS))}, "
                f"got {cfg.transform_layers}"
            )
        if cfg.pos_threshold <= 0:
            raise ConfigError(f"method.pos_threshold must be positive, got {cfg.pos_threshold}")
        if cfg.instance_weight < 0:
            raise ConfigError(f"method.instance_weight must be >= 0, got {cfg.instance_weight}")
        projector = ConvHead(backbone.feature_dim, cfg.proj_hidden_dim, cfg.proj_output_dim)
        heads: dict[str, nn.Module] = {}
        if cfg.instance_weight > 0:
            heads["instance_projector"] = MLPHead(
                backbone.feature_dim, cfg.proj_hidden_dim, cfg.proj_output_dim
            )
        super().__init__(cfg, backbone, projector, **heads)
        self.propagation = PixelPropagation(cfg.proj_output_dim, cfg.gamma, cfg.transform_layers)
        self.predictor = (
            MLPHead(cfg.proj_output_dim, cfg.pred_hidden_dim, cfg.proj_output_dim)
            if cfg.instance_weight > 0
            else None
        )

    def online_encoder(self) -> nn.ModuleDict:
        """The teacher mirrors the backbone, the pixel head and the instance projector if any."""
        modules: dict[str, nn.Module] = {"backbone": self.backbone, "projector": self.projector}
        if self.cfg.instance_weight > 0:
            modules["instance_projector"] = self.instance_projector
        return nn.ModuleDict(modules)

    def training_step(self, views: Views) -> dict[str, Tensor]:
        cfg = self.cfg
        images = views.images[:2]
        maps = images.map(self.backbone.forward_features)
        grids = [feature_grid(m) for m in maps]
        propagated = list(maps.map(lambda m: self.propagation(self.projector(m))))
        teacher = self.momentum_encoder
        with torch.no_grad():
            teacher_maps = images.map(teacher["backbone"].forward_features)
            targets = list(teacher_maps.map(teacher["projector"]))
        # Cell pairs of view 0 (rows) and view 1 (columns) that show the same place.
        positive = positive_pairs(
            views.boxes[0], views.flips[0], grids[0],
            views.boxes[1], views.flips[1], grids[1],
            cfg.pos_threshold,
        )  # fmt: skip
        pixel_loss = pixpro_loss(propagated[0], targets[1], positive) + pixpro_loss(
            propagated[1], targets[0], positive.transpose(1, 2)
        )
        loss = 2.0 * pixel_loss
        out = {"loss_pixel": pixel_loss.detach()}
        if self.predictor is not None:
            pooled = maps.map(self.backbone.pool)
            p1, p2 = pooled.map(lambda z: self.predictor(self.instance_projector(z)))
            with torch.no_grad():
                teacher_pooled = teacher_maps.map(teacher["backbone"].pool)
                z1, z2 = teacher_pooled.map(teacher["instance_projector"])
            instance_loss = normalized_mse(p1, z2) + normalized_mse(p2, z1)
            loss = loss + cfg.instance_weight * instance_loss
            out["loss_instance"] = instance_loss.detach()
        return {"loss": loss, **out}
