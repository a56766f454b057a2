"""What the momentum methods share: an EMA teacher of the backbone and projector.

MoCo v2/v3, BYOL and the dense methods built on them keep a copy of the online encoder that
follows it by an exponential moving average instead of by gradients. The copy is updated after
every optimiser step from the unwrapped module (``on_step_end``), never receives gradients, and is
part of the method's state, so it is saved in checkpoints and restored on resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sslvision.augment.views import ViewStack
from sslvision.backbones import Backbone
from sslvision.config import MethodConfig
from sslvision.errors import ConfigError
from sslvision.methods.base import Method, Progress
from sslvision.nn.momentum import MOMENTUM_SCHEDULES, PairedEMA, momentum_at, momentum_copy


@dataclass
class MomentumConfig(MethodConfig):
    """The teacher's momentum: ``momentum`` at the start, ``final_momentum`` at the end."""

    momentum: float = 0.99
    final_momentum: float = 1.0
    momentum_schedule: str = "cosine"  # constant | cosine


class MomentumMethod(Method):
    """A method whose teacher is an EMA of ``backbone`` followed by ``projector``.

    ``heads`` are further online modules, registered under their keyword names before the teacher
    is copied, so that a subclass whose :meth:`online_encoder` mirrors them too (the dense
    methods' teachers need the feature map and a dense head) finds them there.
    """

    def __init__(
        self, cfg: MomentumConfig, backbone: Backbone, projector: nn.Module, **heads: nn.Module
    ) -> None:
        super().__init__(cfg, backbone)
        if cfg.momentum_schedule not in MOMENTUM_SCHEDULES:
            raise ConfigError(
                f"unknown method.momentum_schedule '{cfg.momentum_schedule}'. "
                f"Valid choices: {', '.join(MOMENTUM_SCHEDULES)}."
            )
        for key in ("momentum", "final_momentum"):
            if not 0.0 <= getattr(cfg, key) <= 1.0:
                raise ConfigError(f"method.{key} must be in [0, 1], got {getattr(cfg, key)}")
        self.projector = projector
        for name, head in heads.items():
            self.add_module(name, head)
        self.momentum_encoder = momentum_copy(self.online_encoder())
        self.ema: PairedEMA | None = None  # paired at the first update, see on_step_end

    def online_encoder(self) -> nn.Module:
        """The online modules the teacher mirrors, as one module: here backbone then projector.

        A subclass may return another grouping (DenseCL and PixPro: an ``nn.ModuleDict`` of the
        backbone and their heads); the EMA pairs teacher and online tensors by name.
        """
        return nn.Sequential(self.backbone, self.projector)

    @torch.no_grad()
    def teacher(self, images: ViewStack) -> list[Tensor]:
        """The teacher's projections of each view (each run of same-size views in one forward).

        Only for the default teacher, ``nn.Sequential(backbone, projector)``.
        """
        return list(images.map(self.momentum_encoder))

    def momentum(self, progress: Progress) -> float:
        cfg = self.cfg
        return momentum_at(
            progress.fraction, cfg.momentum, cfg.final_momentum, cfg.momentum_schedule
        )

    def on_step_end(self, progress: Progress) -> None:
        if self.ema is None:
            # Paired once, at the first step: after a subclass has converted the teacher
            # (MoCo v2's SyncBatchNorm builds new BN modules) and the engine has moved the model.
            self.ema = PairedEMA(self.momentum_encoder, self.online_encoder())
        self.ema.update_(self.momentum(progress))
