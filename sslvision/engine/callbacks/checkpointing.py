"""Checkpoints at epoch ends, every n steps, at the end and at a stop request; only finite
state is ever written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sslvision.engine.callbacks.cadence import due
from sslvision.engine.checkpoint import first_nonfinite, save_checkpoint
from sslvision.engine.loop import Callback, Trainer
from sslvision.errors import NonFiniteError


class Checkpointer(Callback):
    """Writes ``ckpt_dir/last.pt`` (and ``epoch_NNNN.pt`` every ``keep_every_epochs`` epochs)
    from the main process, after every process has checked its own state is finite.

    ``extra_state`` adds the task's own entries (pretraining: the resolved config).
    """

    def __init__(
        self,
        ckpt_dir: Path,
        *,
        save_every_steps: int = 0,
        keep_every_epochs: int = 0,
        extra_state: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.ckpt_dir, self.extra_state = ckpt_dir, extra_state
        self.save_every_steps, self.keep_every_epochs = save_every_steps, keep_every_epochs

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / "last.pt"

    def last_good(self) -> str:
        """Where the last good checkpoint is, for error messages."""
        path = self.last_path
        return f"the last good checkpoint is {path}" if path.exists() else "none"

    def on_step_end(self, trainer: Trainer) -> None:
        if not due(trainer, self.save_every_steps):
            return
        state = {**trainer.state_dict(), **self.extra_state()}
        self._check_finite(trainer, state)
        if trainer.accelerator.is_main_process:
            save_checkpoint(state, self.last_path)
            epochs_done = state["epoch"]
            keep = self.keep_every_epochs
            if trainer.end_of_epoch and keep and epochs_done % keep == 0:
                save_checkpoint(state, self.ckpt_dir / f"epoch_{epochs_done:04d}.pt")
        trainer.accelerator.wait_for_everyone()

    def _check_finite(self, trainer: Trainer, state: dict[str, Any]) -> None:
        # Every rank checks its own state (queues are per process) and all stop together.
        bad = first_nonfinite({k: state[k] for k in ("model", "process_local", "optimizer")})
        flag = torch.tensor([bad is not None], device=trainer.accelerator.device)
        if any(trainer.accelerator.gather(flag).tolist()):
            raise NonFiniteError(
                f"step {trainer.state.step}: the state to checkpoint holds NaN or infinite "
                f"values ({bad or 'on another process'}); it was not saved "
                f"({self.last_good()}). Lower optim.base_lr, enable train.grad_clip, or check "
                f"the data."
            )
