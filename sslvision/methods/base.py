"""What every method is: a backbone plus heads and a loss, driven by the one engine.

A method never owns a training loop. The engine calls ``model(views)`` (so DDP sees a forward),
takes ``["loss"]`` from the returned dict, backpropagates, calls :meth:`Method.on_after_backward`
(gradient surgery such as frozen prototypes), steps the optimiser and then calls
:meth:`Method.on_step_end` for post-step bookkeeping (momentum updates, queues, prototypes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from sslvision.augment.views import Views
from sslvision.backbones import Backbone
from sslvision.config import MethodConfig
from sslvision.config.views import ViewGroup
from sslvision.errors import ConfigError
from sslvision.nn.queue import process_local_buffers


@dataclass(frozen=True)
class Progress:
    """Where training stands after an optimiser step."""

    step: int  # optimiser steps done, this one included
    total_steps: int
    epoch: int

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / max(1, self.total_steps))


class Method(nn.Module):
    """Base class: subclasses set the class attributes and implement :meth:`training_step`."""

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]]
    default_recipe: ClassVar[str] = "simclr"
    min_global_views: ClassVar[int] = 2

    def __init__(self, cfg: MethodConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone

    @classmethod
    def check_views(cls, groups: Sequence[ViewGroup]) -> None:
        """Refuse view recipes the method cannot train on, before any work starts."""
        n_global = sum(g.count for g in groups if g.is_global)
        if n_global < cls.min_global_views:
            raise ConfigError(
                f"method '{cls.name}' needs at least {cls.min_global_views} global views, "
                f"the augment config gives {n_global}"
            )

    def forward(self, views: Views) -> dict[str, Tensor]:
        return self.training_step(views)

    def training_step(self, views: Views) -> dict[str, Tensor]:
        """Return ``{"loss": scalar, ...other scalars to log}`` for one batch of views."""
        raise NotImplementedError

    def on_after_backward(self) -> None:
        """Adjust gradients before the optimiser step (after each micro-batch); none by default."""

    def on_step_end(self, progress: Progress) -> None:
        """Bookkeeping after the optimiser step; nothing by default."""

    def process_local_buffers(self) -> list[str]:
        """State-dict names of the buffers that differ between processes (per-process queues):
        DDP must not overwrite them with rank 0's, and a checkpoint keeps every process's."""
        return process_local_buffers(self)
