"""The kNN monitor: a probe of the backbone every n steps and at the end, reported in that
step's metrics row.

The probe is injected: the evaluators define it (``sslvision.eval.knn_probe``) and register it
in :data:`sslvision.registry.PROBES`, where the trainer finds it by name, so the engine never
imports an evaluator (eval sits above engine).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from sslvision.config import MonitorConfig
from sslvision.engine.loop import Callback, Trainer
from sslvision.errors import ConfigError

Probe = Callable[[nn.Module], float]  # a backbone -> its kNN top-1, the model left untouched


def check_monitor_config(cfg: MonitorConfig) -> None:
    """Refuse a monitor that cannot run, before any training starts."""
    if cfg.knn_every < 0:
        raise ConfigError(f"monitor.knn_every must be >= 0 (0: off), got {cfg.knn_every}")
    if not cfg.knn_every:
        return
    missing = [key for key in ("train_data", "val_data") if not getattr(cfg, key)]
    if missing:
        raise ConfigError(
            f"monitor.knn_every={cfg.knn_every} needs "
            f"{' and '.join(f'monitor.{key}' for key in missing)}: a split directory, "
            "'synthetic' or 'cifar10:ROOT', as `sslvision knn` takes them"
        )
    for key in ("max_train", "max_val"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"monitor.{key} must be >= 0 (0: all), got {getattr(cfg, key)}")
    if cfg.k < 1 or cfg.temperature <= 0:
        raise ConfigError(
            f"monitor.k must be >= 1 and monitor.temperature > 0, got {cfg.k} and {cfg.temperature}"
        )


class KNNMonitor(Callback):
    """Puts ``probe(backbone())`` into ``trainer.step_metrics["knn_top1"]`` every ``every``
    steps and at the last step; its time is left out of the logged throughput. Run it on the
    main process only, before the metrics callback."""

    def __init__(self, probe: Probe, backbone: Callable[[], nn.Module], every: int) -> None:
        self.probe, self.backbone, self.every = probe, backbone, every

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.state.step % self.every == 0 or trainer.finished:
            with trainer.clock.paused():
                trainer.step_metrics["knn_top1"] = self.probe(self.backbone())
