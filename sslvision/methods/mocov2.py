"""MoCo v2 (Chen, Fan, Girshick, He 2020, "Improved Baselines with Momentum Contrastive Learning").

MoCo (He et al., CVPR 2020) with v2's MLP head, blur and a larger crop: queries from the online
encoder, keys from its momentum copy, negatives from a queue of past keys. The key encoder runs
under shuffling BN across processes (or SyncBN), so BatchNorm cannot leak which key matches
which query (He et al. 2020, sec. 3.3: otherwise the model "cheats", solving the pretext task with
poor features). On one process the key batch is shuffled and split into ``shuffle_splits`` BN
batches instead, as the authors' one-GPU demo does. With ``symmetric`` (MoCo v2+) both views
serve as query and key; the queue takes the new keys only after both loss terms are computed, so
neither term sees its own positives as negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslvision.augment.views import Views
from sslvision.backbones import Backbone
from sslvision.errors import ConfigError
from sslvision.losses.infonce import info_nce
from sslvision.methods.momentum import MomentumConfig, MomentumMethod
from sslvision.methods.registry import register_method
from sslvision.nn.distributed import is_distributed
from sslvision.nn.heads import MLPHead
from sslvision.nn.precision import at_least_float32
from sslvision.nn.queue import FeatureQueue
from sslvision.nn.shuffle_bn import shuffled_forward

KEY_BN_CHOICES = ("shuffle", "sync")
QUEUE_START_CHOICES = ("random", "empty")


@dataclass
class MoCoV2Config(MomentumConfig):
    name: str = "mocov2"
    temperature: float = 0.2
    queue_length: int = 65536
    momentum: float = 0.999
    momentum_schedule: str = "constant"
    proj_hidden_dim: int = 2048
    proj_output_dim: int = 128
    symmetric: bool = False  # MoCo v2+: both views as query and key
    key_bn: str = "shuffle"  # shuffle: shuffling BN across processes | sync: SyncBatchNorm
    shuffle_splits: int = 8  # one process: the key batch is shuffled into this many BN batches
    # empty: only real keys as negatives (measured best: Imagenette-64, 150 steps, kNN 0.334 against
    # 0.305, zero-LR control 0.290); random: K random unit vectors, as the authors' code
    queue_start: str = "empty"


@register_method
class MoCoV2(MomentumMethod):
    """InfoNCE of each query against its key and the queue (He et al. 2020, eq. 1)."""

    name = "mocov2"
    config_class = MoCoV2Config
    default_recipe = "mocov2"

    def __init__(self, cfg: MoCoV2Config, backbone: Backbone, **heads: nn.Module) -> None:
        if cfg.key_bn not in KEY_BN_CHOICES:
            raise ConfigError(
                f"unknown method.key_bn '{cfg.key_bn}'. Valid choices: {', '.join(KEY_BN_CHOICES)}."
            )
        if cfg.queue_start not in QUEUE_START_CHOICES:
            raise ConfigError(
                f"unknown method.queue_start '{cfg.queue_start}'. "
                f"Valid choices: {', '.join(QUEUE_START_CHOICES)}."
            )
        if cfg.queue_length < 1:
            raise ConfigError(f"method.queue_length must be positive, got {cfg.queue_length}")
        # MoCo v2's head: fc-ReLU-fc, no BatchNorm (He et al.'s reference code).
        projector = MLPHead(
            backbone.feature_dim, cfg.proj_hidden_dim, cfg.proj_output_dim, hidden_bn=False
        )
        super().__init__(cfg, backbone, projector, **heads)  # heads: a subclass's (DenseCL's)
        if cfg.key_bn == "sync" and is_distributed():
            if not torch.accelerator.is_available():  # DistributedDataParallel would refuse it
                raise ConfigError(
                    "method.key_bn=sync: SyncBatchNorm runs on GPUs only; with CPU processes "
                    "use method.key_bn=shuffle"
                )
            self.momentum_encoder = nn.SyncBatchNorm.convert_sync_batchnorm(self.momentum_encoder)
        self.queue = FeatureQueue(
            cfg.queue_length, cfg.proj_output_dim, random_init=cfg.queue_start == "random"
        )

    def keys(self, images: Tensor) -> Tensor:
        """Normalised keys of one view from the momentum encoder, under the configured BN."""
        with torch.no_grad():
            if self.cfg.key_bn == "shuffle":
                keys = shuffled_forward(self.momentum_encoder, images, self.cfg.shuffle_splits)
            else:
                keys = self.momentum_encoder(images)
            return F.normalize(at_least_float32(keys), dim=1)

    def training_step(self, views: Views) -> dict[str, Tensor]:
        cfg = self.cfg
        first, second = views.images[:2]
        negatives = self.queue.contents().clone()  # the queue before this step's keys
        if cfg.symmetric:
            q1, q2 = views.images[:2].map(lambda x: self.projector(self.backbone(x)))
            k1, k2 = self.keys(first), self.keys(second)
            loss = info_nce(q1, k2, negatives, cfg.temperature) + info_nce(
                q2, k1, negatives, cfg.temperature
            )
            new_keys = torch.cat([k2, k1])
        else:
            q1 = self.projector(self.backbone(first))
            new_keys = self.keys(second)
            loss = info_nce(q1, new_keys, negatives, cfg.temperature)
        self.queue.enqueue(new_keys)
        return {"loss": loss}
