"""The callbacks a training run is made of, one concern a module (see :mod:`..loop`)."""

from sslvision.engine.callbacks.checkpointing import Checkpointer
from sslvision.engine.callbacks.guard import NonFiniteGuard
from sslvision.engine.callbacks.knn_monitor import KNNMonitor
from sslvision.engine.callbacks.metrics import MetricsCallback, ProgressBar
from sslvision.engine.callbacks.online_probe import OnlineLinearProbe
from sslvision.engine.callbacks.preemption import PREEMPTED_EXIT_CODE, Preemption

__all__ = [
    "PREEMPTED_EXIT_CODE",
    "Checkpointer",
    "KNNMonitor",
    "MetricsCallback",
    "NonFiniteGuard",
    "OnlineLinearProbe",
    "Preemption",
    "ProgressBar",
]
