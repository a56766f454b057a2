"""SwAV (Caron et al., NeurIPS 2020, "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments").

Every crop is scored against K learnable prototypes; the scores of the global crops are turned
into balanced soft codes by Sinkhorn-Knopp, and every other crop predicts them (the swapped
prediction). With small batches a per-process queue of past global-crop embeddings joins the
Sinkhorn batch, so the equipartition runs over enough samples; it starts at ``queue_start_epoch``
and is used once full. The prototypes are L2-normalised after every step and frozen for the first
``freeze_prototypes_steps`` steps, which the paper needs to avoid an early collapse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslvision.augment.views import Views
from sslvision.backbones import Backbone
from sslvision.config import MethodConfig
from sslvision.errors import ConfigError
from sslvision.losses.swav import sinkhorn_knopp, swapped_prediction_loss
from sslvision.methods.base import Method, Progress
from sslvision.methods.registry import register_method
from sslvision.nn.heads import MLPHead
from sslvision.nn.prototypes import Prototypes
from sslvision.nn.queue import FeatureQueue


@dataclass
class SwAVConfig(MethodConfig):
    name: str = "swav"
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    num_prototypes: int = 3000
    proj_hidden_dim: int = 2048
    proj_output_dim: int = 128
    freeze_prototypes_steps: int = 313  # the paper: the first epoch (313 steps of 4,096)
    queue_length: int = 0  # per process; 0: no queue
    queue_start_epoch: int = 15


@register_method
class SwAV(Method):
    """Swapped prediction of Sinkhorn codes over all crops (multi-crop)."""

    name = "swav"
    config_class = SwAVConfig
    default_recipe = "swav"

    def __init__(self, cfg: SwAVConfig, backbone: Backbone) -> None:
        super().__init__(cfg, backbone)
        for key in ("temperature", "epsilon", "sinkhorn_iterations", "num_prototypes"):
            if getattr(cfg, key) <= 0:
                raise ConfigError(f"method.{key} must be positive, got {getattr(cfg, key)}")
        if cfg.queue_length < 0:
            raise ConfigError(f"method.queue_length must be >= 0, got {cfg.queue_length}")
        self.projector = MLPHead(backbone.feature_dim, cfg.proj_hidden_dim, cfg.proj_output_dim)
        self.prototypes = Prototypes(cfg.proj_output_dim, cfg.num_prototypes)
        # One queue per global crop (the code crops), filled and used per process as in the paper.
        self.queues = nn.ModuleList(
            FeatureQueue(cfg.queue_length, cfg.proj_output_dim, gather=False, random_init=False)
            for _ in range(2 if cfg.queue_length else 0)
        )
        # Where training stands (host ints, no device sync), saved in the state dict as extra
        # state so that resume restores the freeze and the queue start.
        self.steps_done = 0
        self.epoch = 0

    def get_extra_state(self) -> dict[str, int]:
        return {"steps_done": self.steps_done, "epoch": self.epoch}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.steps_done, self.epoch = state["steps_done"], state["epoch"]

    def queue_active(self) -> bool:
        return bool(self.queues) and self.epoch >= self.cfg.queue_start_epoch

    def codes(self, scores: Tensor, queue: FeatureQueue | None) -> Tensor:
        """Sinkhorn codes of one global crop, with the queue's scores in the batch once full."""
        cfg = self.cfg
        with torch.no_grad():
            batch = scores.detach()
            if queue is not None and queue.is_full:
                batch = torch.cat([self.prototypes(queue.contents()), batch])
            return sinkhorn_knopp(batch, cfg.epsilon, cfg.sinkhorn_iterations)[-len(scores) :]

    def training_step(self, views: Views) -> dict[str, Tensor]:
        cfg = self.cfg
        z = list(views.images.map(lambda x: F.normalize(self.projector(self.backbone(x)), dim=1)))
        scores = [self.prototypes(zi) for zi in z]
        use_queue = self.queue_active()
        code_crops = min(2, views.global_count)
        codes = [
            self.codes(scores[i], self.queues[i] if use_queue else None) for i in range(code_crops)
        ]
        loss = swapped_prediction_loss(scores, codes, cfg.temperature)
        if use_queue:  # after the codes: a batch never finds itself in the queue
            for i in range(code_crops):
                self.queues[i].enqueue(z[i].detach())
        return {"loss": loss}

    def on_after_backward(self) -> None:
        if self.steps_done < self.cfg.freeze_prototypes_steps:
            self.prototypes.drop_gradient_()

    def on_step_end(self, progress: Progress) -> None:
        self.prototypes.normalize_()
        self.steps_done, self.epoch = progress.step, progress.epoch
