"""The online linear probe: a linear classifier trained on the data set's labels alongside
pretraining, on the backbone's features of each batch's first view, its running top-1 logged in
the metrics (solo-learn's and lightly's online classifier), so a run shows early whether its
features separate the classes, without a probe of its checkpoints.

It watches and never steers: the features are detached, the head is no part of the method, its
optimiser or the DDP model, has its own SGD, starts at zero and draws nothing from the global RNG,
so a run with it trains bitwise the same weights as one without it.

Where the features come from: every method runs its online backbone's ``forward_features`` on
view 0 first, alone or stacked view-major with the other views (so view 0 is in the first rows),
itself (DenseCL; PixPro, which never pools) or through ``Backbone.forward``. The probe wraps that
one instance's ``forward_features`` (the momentum encoders are copies of their own and are never
seen), keeps the map of the first call after a forward pre-hook on the method has armed it with
the batch's labels, and pools its first rows itself: detached, in float32, outside autocast and
with the backbone in eval mode, so that no dropout draws and no normalisation statistic moves.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import Tensor, nn

from sslvision.augment.views import Views
from sslvision.backbones import Backbone
from sslvision.config import MonitorConfig
from sslvision.engine.callbacks.cadence import due
from sslvision.engine.loop import Callback, Trainer
from sslvision.engine.resume import restore_optimizer
from sslvision.errors import ConfigError
from sslvision.methods.base import Method

ONLINE_LINEAR_TOP1 = "online_linear_top1"  # the metrics column
MOMENTUM = 0.9


def check_online_linear_config(cfg: MonitorConfig) -> None:
    """Refuse a probe learning rate that cannot train, before any training starts."""
    if not cfg.online_linear_lr > 0:  # also refuses NaN
        raise ConfigError(f"monitor.online_linear_lr must be > 0, got {cfg.online_linear_lr}")


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode, every submodule's own mode restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class OnlineLinearProbe(Callback):
    """Trains ``nn.Linear(feature_dim, num_classes)`` on the online backbone's detached pooled
    features of each micro-batch's first view (SGD at ``lr``, momentum 0.9, no weight decay) and
    puts its top-1 over the batches since the last row, each scored before its update, into
    ``trainer.step_metrics["online_linear_top1"]`` every ``cadences`` steps and at boundaries.

    Pass the metrics callback's cadences and run it before it, on every process: the counts are
    summed and the head's gradients averaged over processes, so all heads stay the same.
    :meth:`state_dict` is the head and its optimiser, for checkpoints.
    """

    state_key = "online_linear"  # where a checkpoint holds the state

    def __init__(
        self,
        method: Method,
        num_classes: int,
        lr: float,
        cadences: Sequence[int],
        device: torch.device,
    ) -> None:
        self.method, self.backbone, self.cadences = method, method.backbone, tuple(cadences)
        # Zeros, not nn.Linear's random init, which would draw from the global RNG.
        dim = self.backbone.feature_dim
        self.head = nn.utils.skip_init(nn.Linear, dim, num_classes, device=device)
        for parameter in self.head.parameters():
            nn.init.zeros_(parameter)
        self.optimizer = torch.optim.SGD(self.head.parameters(), lr=lr, momentum=MOMENTUM)
        self.counts = torch.zeros(2, dtype=torch.long, device=device)  # correct, seen
        self._labels: Tensor | None = None
        self._features: Tensor | None = None
        self._hook: Any = None

    def state_dict(self) -> dict[str, Any]:
        """The head and its optimiser's state."""
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`, with the configured learning rate."""
        self.head.load_state_dict(state["head"])
        restore_optimizer(self.optimizer, state["optimizer"])

    def on_train_start(self, trainer: Trainer) -> None:
        self._hook = self.method.register_forward_pre_hook(self._arm)
        self.backbone.forward_features = types.MethodType(self._capture, self.backbone)

    def _arm(self, method: nn.Module, args: tuple[Views, ...]) -> None:
        labels = args[0].labels
        if labels is None:
            raise ValueError("monitor.online_linear needs the batch's labels in Views.labels")
        self._labels, self._features = labels, None

    def _capture(self, backbone: Backbone, x: Tensor) -> Tensor:
        features = type(backbone).forward_features(backbone, x)
        # A deep copy of the backbone (the kNN monitor's) carries this method, bound to itself.
        if backbone is self.backbone and self._labels is not None and self._features is None:
            self._features = features
        return features

    def on_batch_end(self, trainer: Trainer, outputs: dict[str, Tensor]) -> None:
        features, labels = self._features, self._labels
        self._features = self._labels = None
        if features is None or labels is None:
            raise RuntimeError(
                "the online linear probe saw no forward_features call of the online backbone "
                "in this batch's forward"
            )
        with torch.autocast(trainer.accelerator.device.type, enabled=False):
            with torch.no_grad(), _eval_mode(self.backbone):
                pooled = self.backbone.pool(features[: len(labels)].detach().float())
            self.update(pooled, labels, trainer.accelerator)

    def update(self, features: Tensor, labels: Tensor, accelerator: Accelerator) -> None:
        """Score the head on one batch of (N, feature_dim) features, then take an SGD step."""
        logits = self.head(features)
        self.counts[0] += (logits.argmax(dim=1) == labels).sum()
        self.counts[1] += len(labels)
        self.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(logits, labels).backward()
        parameters = list(self.head.parameters())
        averaged = accelerator.reduce([p.grad for p in parameters], "mean")
        for parameter, grad in zip(parameters, averaged, strict=True):
            parameter.grad.copy_(grad)
        self.optimizer.step()

    def on_step_end(self, trainer: Trainer) -> None:
        if not due(trainer, *self.cadences):
            return
        correct, seen = trainer.accelerator.reduce(self.counts, "sum").tolist()
        trainer.step_metrics[ONLINE_LINEAR_TOP1] = correct / seen
        self.counts.zero_()

    def on_train_end(self, trainer: Trainer) -> None:
        if self._hook is not None:
            self._hook.remove()
            del self.backbone.forward_features  # back to the class's
            self._hook = None
