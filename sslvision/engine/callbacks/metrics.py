"""Metrics rows (loss, learning rate, throughput and what other callbacks add) and the
progress bar."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sslvision.engine.callbacks.cadence import due
from sslvision.engine.loop import Callback, Trainer
from sslvision.engine.metrics import METRIC_COLUMNS, MetricsLogger


class MetricsCallback(Callback):
    """Appends a row to the state's history every ``cadences`` steps and at boundaries, and on
    the main process writes it to ``metrics.csv`` and TensorBoard in ``run_dir``.

    The loss is the mean over the micro-batches since the last row and over processes (an
    all-reduce, so every process has the same cadences). ``images_per_batch`` is a micro-batch's
    images over all processes; callbacks before this one may add columns to the row through
    ``trainer.step_metrics`` (listed in ``extra_columns`` for the CSV header).
    """

    def __init__(
        self,
        run_dir: Path | None,
        cadences: Sequence[int],
        images_per_batch: int,
        extra_columns: Sequence[str] = (),
    ) -> None:
        self.run_dir, self.cadences = run_dir, tuple(cadences)
        self.images_per_batch, self.columns = images_per_batch, (*METRIC_COLUMNS, *extra_columns)
        self.writer: MetricsLogger | None = None
        self.loss_sum: Tensor | None = None
        self.batches = 0
        self._restored_sum = 0.0

    def loop_state(self) -> dict[str, Any]:
        """The loss summed since the last row: a checkpoint between two rows keeps it."""
        summed = self.loss_sum.detach().cpu() if self.loss_sum is not None else torch.zeros(())
        return {"loss_sum": summed, "batches": self.batches}

    def load_loop_state(self, state: dict[str, Any]) -> None:
        if state:
            self._restored_sum, self.batches = state["loss_sum"], int(state["batches"])

    def on_train_start(self, trainer: Trainer) -> None:
        if self.run_dir is not None:
            state = trainer.state
            self.writer = MetricsLogger(self.run_dir, state.history, state.step, self.columns)
        self.loss_sum = torch.tensor(float(self._restored_sum), device=trainer.accelerator.device)
        trainer.clock.restart()

    def on_batch_end(self, trainer: Trainer, outputs: dict[str, Tensor]) -> None:
        self.loss_sum += outputs["loss"]
        self.batches += 1

    def on_step_end(self, trainer: Trainer) -> None:
        if not due(trainer, *self.cadences):
            return
        loss = trainer.accelerator.reduce(self.loss_sum, "mean") / self.batches
        row = {
            "step": trainer.state.step,
            "epoch": trainer.state.epoch,
            "loss": float(loss.item()),
            "lr": trainer.lr,
            "images_per_s": self.batches * self.images_per_batch / trainer.clock.elapsed(),
            **trainer.step_metrics,
        }
        trainer.state.history.append(row)
        if self.writer:
            self.writer.log(row)
        self.loss_sum.zero_()
        self.batches = 0
        trainer.clock.restart()

    def on_train_end(self, trainer: Trainer) -> None:
        if self.writer:
            self.writer.close()


class ProgressBar(Callback):
    """A tqdm bar over the optimiser steps, showing the last logged row."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar: tqdm | None = None
        self.rows_shown = 0

    def on_train_start(self, trainer: Trainer) -> None:
        state = trainer.state
        total = trainer.length.total_steps
        self.bar = tqdm(total=total, initial=state.step, desc=self.description, dynamic_ncols=True)
        self.rows_shown = len(state.history)

    def on_step_end(self, trainer: Trainer) -> None:
        self.bar.update(1)
        history = trainer.state.history
        if len(history) > self.rows_shown:
            self.rows_shown = len(history)
            row = history[-1]
            extra = {"knn": f"{row['knn_top1']:.3f}"} if "knn_top1" in row else {}
            self.bar.set_postfix(
                loss=f"{row['loss']:.4f}",
                lr=f"{row['lr']:.3g}",
                img_s=f"{row['images_per_s']:.0f}",
                **extra,
            )

    def on_train_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
