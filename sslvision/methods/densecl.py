"""DenseCL (Wang, Zhang, Shen, Kong, Li, CVPR 2021, "Dense Contrastive Learning for
Self-Supervised Visual Pre-Training").

MoCo v2 with a second, dense branch. Besides the global head on the pooled features, a dense head
(1x1 conv, ReLU, 1x1 conv) projects every cell of the backbone's last feature map. Each query cell
is contrasted (InfoNCE, eq. 2) with the key cell whose *backbone* feature is most similar
(argmax of the cosine, eq. 3) against a second queue, which holds each key image's dense key
averaged over its cells. The loss is (1 - lambda) x global + lambda x dense with lambda =
``dense_weight`` = 0.5 (eq. 4). Everything else, the momentum key encoder under shuffling BN, the
global queue and ``symmetric``, is MoCo v2's; both queues are buffers, so checkpoints keep them.
The matching needs no crop boxes: correspondence comes from the features, so any views work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslvision.augment.views import Views
from sslvision.backbones import Backbone
from sslvision.errors import ConfigError
from sslvision.losses.densecl import dense_info_nce, match_cells
from sslvision.losses.infonce import info_nce
from sslvision.methods.mocov2 import MoCoV2, MoCoV2Config
from sslvision.methods.registry import register_method
from sslvision.nn.correspondence import feature_grid
from sslvision.nn.heads import ConvHead
from sslvision.nn.precision import at_least_float32
from sslvision.nn.queue import FeatureQueue
from sslvision.nn.shuffle_bn import shuffled_forward


@dataclass
class DenseCLConfig(MoCoV2Config):
    """MoCo v2's keys (the dense head shares the projector's widths) plus the dense weight."""

    name: str = "densecl"
    dense_weight: float = 0.5  # lambda of eq. 4
    queue_start: str = "random"  # the authors' start; "empty" is not measured for DenseCL yet


class DenseKeys(NamedTuple):
    """What the momentum encoder gives for one key view."""

    global_keys: Tensor  # (N, D), L2-normalised
    dense: Tensor  # (N, D, h, w), the dense head's output
    pooled_dense: Tensor  # (N, D), the dense output averaged over cells, L2-normalised
    features: Tensor  # (N, C, h, w), the backbone's last feature map


@register_method
class DenseCL(MoCoV2):
    """(1 - lambda) x MoCo's global InfoNCE + lambda x the dense InfoNCE over matched cells."""

    name = "densecl"
    config_class = DenseCLConfig
    default_recipe = "mocov2"

    def __init__(self, cfg: DenseCLConfig, backbone: Backbone) -> None:
        if not 0.0 <= cfg.dense_weight <= 1.0:
            raise ConfigError(f"method.dense_weight must be in [0, 1], got {cfg.dense_weight}")
        # The authors' dense head: conv-ReLU-conv, no BN, the global head's widths.
        dense_head = ConvHead(
            backbone.feature_dim, cfg.proj_hidden_dim, cfg.proj_output_dim, hidden_bn=False
        )
        super().__init__(cfg, backbone, dense_head=dense_head)
        self.dense_queue = FeatureQueue(
            cfg.queue_length, cfg.proj_output_dim, random_init=cfg.queue_start == "random"
        )

    def online_encoder(self) -> nn.ModuleDict:
        """The key encoder mirrors the backbone and both heads."""
        return nn.ModuleDict(
            {"backbone": self.backbone, "projector": self.projector, "dense_head": self.dense_head}
        )

    @torch.no_grad()
    def dense_keys(self, images: Tensor) -> DenseKeys:
        """Everything the loss needs from the key encoder for one view, under the configured BN.

        Shuffling BN permutes whole samples, so the three outputs travel through it packed into
        one row per sample and are unpacked after.
        """
        teacher = self.momentum_encoder
        shapes: dict[str, torch.Size] = {}

        def encode(x: Tensor) -> Tensor:
            features = teacher["backbone"].forward_features(x)
            global_keys = teacher["projector"](teacher["backbone"].pool(features))
            dense = teacher["dense_head"](features)
            shapes.update(dense=dense.shape[1:], features=features.shape[1:])
            parts = (global_keys, dense.flatten(1), features.flatten(1))
            return torch.cat([at_least_float32(p) for p in parts], dim=1)

        if self.cfg.key_bn == "shuffle":
            packed = shuffled_forward(encode, images, self.cfg.shuffle_splits)
        else:
            packed = encode(images)
        n, d = packed.shape[0], self.cfg.proj_output_dim
        sizes = [d, shapes["dense"].numel(), shapes["features"].numel()]
        global_keys, dense, features = packed.split(sizes, dim=1)
        dense = dense.reshape(n, *shapes["dense"])
        features = features.reshape(n, *shapes["features"])
        return DenseKeys(
            F.normalize(global_keys, dim=1),
            dense,
            F.normalize(dense.flatten(2).mean(dim=2), dim=1),
            features,
        )

    def keys(self, images: Tensor) -> Tensor:
        """MoCo v2's normalised global keys, from the dense key encoder."""
        return self.dense_keys(images).global_keys

    def training_step(self, views: Views) -> dict[str, Tensor]:
        cfg = self.cfg
        images = views.images[:2]
        # (query view, key view) pairs; MoCo v2+'s symmetric loss adds the swapped pair.
        pairs = [(0, 1), (1, 0)] if cfg.symmetric else [(0, 1)]
        queried = len({q for q, _ in pairs})  # the query views are the leading ones
        maps = list(images[:queried].map(self.backbone.forward_features))
        feature_grid(maps[0])  # a spatial map, or a clear error
        keys = {k: self.dense_keys(images[k]) for _, k in pairs}
        negatives = self.queue.contents().clone()  # both queues as before this step's keys
        dense_negatives = self.dense_queue.contents().clone()
        global_loss = dense_loss = torch.zeros((), device=images[0].device)
        for q, k in pairs:
            features = maps[q]
            query = self.projector(self.backbone.pool(features))
            global_loss = global_loss + info_nce(
                query, keys[k].global_keys, negatives, cfg.temperature
            )
            match = match_cells(features.detach(), keys[k].features)
            dense_loss = dense_loss + dense_info_nce(
                self.dense_head(features), keys[k].dense, match, dense_negatives, cfg.temperature
            )
        key_views = [k for _, k in pairs]
        self.queue.enqueue(torch.cat([keys[k].global_keys for k in key_views]))
        self.dense_queue.enqueue(torch.cat([keys[k].pooled_dense for k in key_views]))
        lam = cfg.dense_weight
        return {
            "loss": (1.0 - lam) * global_loss + lam * dense_loss,
            "loss_global": global_loss.detach(),
            "loss_dense": dense_loss.detach(),
        }
