"""The training loop and nothing else: batch -> forward -> backward -> optimiser step.

What happens around the steps (metrics, the kNN monitor, checkpoints, the non-finite guard,
preemption, the method's own bookkeeping) is a :class:`Callback`, each small and testable
alone, so that every task that trains something drives the same loop:

- pretraining (:func:`sslvision.engine.trainer.train`) passes a method's forward over the views
  of a batch, and the callbacks of a pretraining run;
- the linear probe passes the heads' forward over a batch of frozen features, its own model and
  optimiser, and reuses the same guard, metrics, checkpoint and preemption callbacks, so that a
  probe of 100 epochs is resumable and preemptible exactly as pretraining is;
- a SLURM job runs either and reads :attr:`TrainResult.status`: ``"preempted"`` means the state
  of the step boundary after the signal is on disk and ``--resume auto`` continues it.

The loop keeps the host and the device decoupled: it reads nothing back from the device; the
callbacks that must (the guard, metrics, checkpoints) do so only at their own steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from sslvision.data.sampler import ResumableSampler
from sslvision.engine.checkpoint import gather_from_every_process, rng_state, set_rng_state
from sslvision.engine.resume import restore_optimizer, resume_schedule

Forward = Callable[[Any], dict[str, Tensor]]  # a loader batch -> {"loss": scalar, ...}


@dataclass
class TrainState:
    """Where the loop stands, all of it checkpointed."""

    step: int = 0  # optimiser steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch done
    history: list[dict[str, float]] = field(default_factory=list)  # the logged rows so far


@dataclass(frozen=True)
class LoopLength:
    """How long the loop runs: ``total_steps`` optimiser steps, at most ``epochs`` epochs of
    ``micro_per_epoch`` micro-batches (a multiple of the accumulation steps)."""

    total_steps: int
    epochs: int
    micro_per_epoch: int


class Callback:
    """Hooks around the loop; each receives the :class:`Trainer`. All default to nothing.

    Callbacks run in the order given, which matters where one reads what another sets: a stop
    request (preemption) must come before the checkpoint that honours it, the guard before
    anything that logs or saves, a monitor before the row that reports it.
    """

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first batch (after a resume has restored the state)."""

    def on_after_backward(self, trainer: Trainer) -> None:
        """After each micro-batch's backward, before clipping and the optimiser step."""

    def on_batch_end(self, trainer: Trainer, outputs: dict[str, Tensor]) -> None:
        """After each micro-batch, with its detached outputs (still on the device)."""

    def on_step_end(self, trainer: Trainer) -> None:
        """After each optimiser step and the scheduler's step."""

    def on_train_end(self, trainer: Trainer) -> None:
        """When the loop ends, normally or by an exception."""

    def loop_state(self) -> dict[str, Any]:
        """This process's state that a checkpoint must keep for resume to continue exactly
        (e.g. the loss summed since the last logged row); nothing by default."""
        return {}

    def load_loop_state(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`loop_state` returned, before ``on_train_start``."""


class Stopwatch:
    """Seconds of training since the last :meth:`restart`, leaving out :meth:`paused` spans
    (a monitor's probe must not count against the logged throughput)."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self._start, self._paused = time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self._start - self._paused

    @contextmanager
    def paused(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - start


@dataclass
class TrainResult:
    status: str  # "finished", or the reason a callback stopped the loop ("preempted")
    state: TrainState


class Trainer:
    """Runs ``forward`` over ``loader`` with backward, clipping, optimiser and scheduler steps
    (accelerate handles devices, precision, accumulation and DDP), calling ``callbacks``.

    ``model`` and ``optimizer`` are the ones ``accelerator.prepare`` returned. ``process_local``
    names the model-state entries that differ between processes (per-process queues): a
    checkpoint keeps every process's copy of them.
    """

    def __init__(
        self,
        *,
        accelerator: Accelerator,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: LRScheduler,
        loader: DataLoader,
        sampler: ResumableSampler,
        forward: Forward,
        length: LoopLength,
        callbacks: Sequence[Callback] = (),
        grad_clip: float = 0.0,
        process_local: Sequence[str] = (),
    ) -> None:
        self.accelerator, self.model, self.optimizer = accelerator, model, optimizer
        self.scheduler, self.loader, self.sampler = scheduler, loader, sampler
        self.forward, self.length, self.callbacks = forward, length, list(callbacks)
        self.grad_clip, self.process_local = grad_clip, list(process_local)
        self.state = TrainState()
        self.clock = Stopwatch()
        self.lr = 0.0  # the learning rate of the last optimiser step
        self.step_metrics: dict[str, float] = {}  # what callbacks add to this step's row
        self.stop_reason: str | None = None
        self._restore_rng: dict[str, Any] | None = None

    @property
    def end_of_epoch(self) -> bool:
        return self.state.batch_in_epoch >= self.length.micro_per_epoch

    @property
    def finished(self) -> bool:
        return self.state.step >= self.length.total_steps

    def request_stop(self, reason: str) -> None:
        """End the loop after this step's callbacks (the later ones see ``stop_reason``)."""
        self.stop_reason = reason

    def fit(self) -> TrainResult:
        """Train until the length is done or a callback asks to stop."""
        self._emit("on_train_start")
        try:
            while not self.finished and self.state.epoch < self.length.epochs:
                for batch in self._epoch_batches():
                    self._micro_step(batch)
                    if self.accelerator.sync_gradients:
                        self._end_step()
                        if self.stop_reason or self.end_of_epoch or self.finished:
                            break
                if self.end_of_epoch:
                    self.state.epoch, self.state.batch_in_epoch = self.state.epoch + 1, 0
                if self.stop_reason:
                    break
        finally:
            self._emit("on_train_end")
        return TrainResult(self.stop_reason or "finished", self.state)

    def _epoch_batches(self) -> Iterator[Any]:
        state = self.state
        self.sampler.set_epoch(state.epoch, start_index=state.batch_in_epoch * self.batch_size)
        batches = iter(self.loader)  # draws the loader's base seed from the global RNG
        if self._restore_rng is not None:  # so a resumed run restores the RNG after it
            set_rng_state(self._restore_rng)
            self._restore_rng = None
        return batches

    @property
    def batch_size(self) -> int:
        return self.loader.batch_size or 1

    def _micro_step(self, batch: Any) -> None:
        with self.accelerator.accumulate(self.model):
            outputs = self.forward(batch)
            self.accelerator.backward(outputs["loss"])
            self._emit("on_after_backward")
            if self.grad_clip > 0 and self.accelerator.sync_gradients:
                self.accelerator.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.state.batch_in_epoch += 1
        detached = {k: v.detach() for k, v in outputs.items()}
        for callback in self.callbacks:
            callback.on_batch_end(self, detached)

    def _end_step(self) -> None:
        self.lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.state.step += 1
        self.step_metrics = {}
        self._emit("on_step_end")

    def _emit(self, hook: str) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self)

    def state_dict(self) -> dict[str, Any]:
        """Everything the loop needs to continue from this step boundary in a new process."""
        model_state = self.accelerator.unwrap_model(self.model).state_dict()
        epoch, batch = self.state.epoch, self.state.batch_in_epoch
        if self.end_of_epoch:
            epoch, batch = epoch + 1, 0
        scaler = self.accelerator.scaler
        return {
            "model": model_state,
            "process_local": gather_from_every_process(
                {name: model_state[name] for name in self.process_local}
            ),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler else None,
            "rng": gather_from_every_process(rng_state()),
            "step": self.state.step,
            "epoch": epoch,
            "batch_in_epoch": batch,
            "metrics": list(self.state.history),
            "callbacks": gather_from_every_process([c.loop_state() for c in self.callbacks]),
        }

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Continue from ``checkpoint`` (written by :meth:`state_dict` with as many processes).

        The optimiser keeps the configured hyperparameters and the schedule is rebuilt at the
        restored step (see :mod:`sslvision.engine.resume`).
        """
        model = self.accelerator.unwrap_model(self.model)
        model.load_state_dict(checkpoint["model"])
        rank = self.accelerator.process_index
        own = checkpoint.get("process_local", [])  # this process's queues; "model" has rank 0's
        if rank < len(own):
            model.load_state_dict(own[rank], strict=False)
        restore_optimizer(self.optimizer, checkpoint["optimizer"])
        if self.accelerator.scaler is not None and checkpoint.get("scaler"):
            self.accelerator.scaler.load_state_dict(checkpoint["scaler"])
        self.state = TrainState(
            checkpoint["step"],
            checkpoint["epoch"],
            checkpoint["batch_in_epoch"],
            list(checkpoint["metrics"]),
        )
        resume_schedule(self.scheduler, self.state.step)
        self._restore_rng = checkpoint["rng"][rank]
        saved = checkpoint.get("callbacks", [])
        if rank < len(saved) and len(saved[rank]) == len(self.callbacks):
            for callback, state in zip(self.callbacks, saved[rank], strict=True):
                callback.load_loop_state(state)
