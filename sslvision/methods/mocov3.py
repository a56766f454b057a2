"""MoCo v3 (Chen, Xie, He, ICCV 2021, "An Empirical Study of Training Self-Supervised Vision
Transformers").

No queue: each query is contrasted with the keys of the whole batch, gathered from every process
(Algorithm 1). A predictor sits on the query branch, the key encoder follows by a momentum that
rises from 0.99 to 1 on a cosine, and the symmetrised loss is scaled by 2 x temperature as in the
authors' code. For ViTs the paper freezes the random patch projection (``freeze_patch_embed``),
which stabilises training.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from sslvision.augment.views import Views
from sslvision.backbones import Backbone
from sslvision.errors import ConfigError
from sslvision.losses.infonce import batch_info_nce
from sslvision.methods.momentum import MomentumConfig, MomentumMethod
from sslvision.methods.registry import register_method
from sslvision.nn.heads import MLPHead


@dataclass
class MoCoV3Config(MomentumConfig):
    name: str = "mocov3"
    temperature: float = 1.0  # ResNet; the paper uses 0.2 for ViTs
    momentum: float = 0.99
    momentum_schedule: str = "cosine"
    proj_hidden_dim: int = 4096
    proj_output_dim: int = 256
    proj_layers: int = 2  # ResNet 2, ViT 3
    pred_hidden_dim: int = 4096
    freeze_patch_embed: bool = False  # ViT: keep the random patch projection fixed


@register_method
class MoCoV3(MomentumMethod):
    """Symmetric in-batch InfoNCE between predicted queries and momentum keys."""

    name = "mocov3"
    config_class = MoCoV3Config
    default_recipe = "byol"  # the paper takes BYOL's asymmetric augmentation

    def __init__(self, cfg: MoCoV3Config, backbone: Backbone) -> None:
        if cfg.freeze_patch_embed:
            patch_embed = getattr(backbone.model, "patch_embed", None)
            if patch_embed is None:
                raise ConfigError(
                    f"method.freeze_patch_embed needs a ViT backbone with a patch embedding; "
                    f"'{backbone.name}' has none"
                )
            patch_embed.requires_grad_(False)
        # The authors' heads: BN on every hidden layer and a final BN without affine parameters
        # on the projector (SimCLR v2's design); the predictor ends without BN for ResNets.
        projector = MLPHead(
            backbone.feature_dim,
            cfg.proj_hidden_dim,
            cfg.proj_output_dim,
            cfg.proj_layers,
            last_bn=True,
        )
        super().__init__(cfg, backbone, projector)
        self.predictor = MLPHead(cfg.proj_output_dim, cfg.pred_hidden_dim, cfg.proj_output_dim)

    def training_step(self, views: Views) -> dict[str, Tensor]:
        images = views.images[:2]
        q1, q2 = images.map(lambda x: self.predictor(self.projector(self.backbone(x))))
        k1, k2 = self.teacher(images)
        temperature = self.cfg.temperature
        loss = batch_info_nce(q1, k2, temperature) + batch_info_nce(q2, k1, temperature)
        return {"loss": loss * 2 * temperature}
