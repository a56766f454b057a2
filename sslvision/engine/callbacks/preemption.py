"""Preemption: a signal asks the run to stop; it checkpoints at the next step boundary and
ends with status ``"preempted"`` (``sslvision pretrain`` exits with :data:`PREEMPTED_EXIT_CODE`).

A handler only sets a flag: the step in flight finishes, so the checkpoint holds a whole step
and ``--resume auto`` continues bitwise as if nothing had happened. With several processes the
flags are combined at every step over a gloo group (CPU tensors: no device sync), so all stop at
the same step even when the signal reaches them between two steps.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from sslvision.engine.loop import Callback, Trainer
from sslvision.nn.distributed import is_distributed

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): stopped cleanly, resume to continue
# SIGTERM: SLURM's preemption and kill; SIGUSR1: a common ``--signal``; SIGUSR2: submitit's
# ``--signal=USR2@90`` before the time limit (sslvision.launch hands it on to submitit's requeue).
DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Preemption(Callback):
    """Stops the loop at the step boundary after any of ``signals`` arrived."""

    def __init__(self, signals: Sequence[signal.Signals] = DEFAULT_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._group: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum)

    def on_train_start(self, trainer: Trainer) -> None:
        if threading.current_thread() is threading.main_thread():  # signals reach only it
            self._previous = {s: signal.signal(s, self._handle) for s in self.signals}
        if is_distributed():
            self._group = dist.new_group(backend="gloo")  # collective: every rank builds it

    def on_step_end(self, trainer: Trainer) -> None:
        asked = self.received is not None
        if self._group is not None:
            flag = torch.tensor([int(asked)])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
            asked = bool(flag.item())
        if asked:
            name = self.received.name if self.received else "a signal on another process"
            if trainer.accelerator.is_main_process:
                print(f"{name}: stopping at step {trainer.state.step} with a checkpoint")
            trainer.request_stop("preempted")

    def on_train_end(self, trainer: Trainer) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
        if self._group is not None:
            dist.destroy_process_group(self._group)
            self._group = None
