"""The non-finite guard: a NaN or infinite loss stops every process before anything is read
or saved, naming the first bad step and the last good checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from sslvision.engine.callbacks.cadence import due
from sslvision.engine.loop import Callback, Trainer
from sslvision.errors import NonFiniteError


class NonFiniteGuard(Callback):
    """Folds each micro-batch's loss into a device flag (no host sync) and checks it at every
    step where another callback reads or saves: every ``cadences`` steps and at boundaries.

    ``last_good`` describes the checkpoint a user can go back to (the checkpointer's).
    """

    def __init__(self, cadences: Sequence[int], last_good: Callable[[], str]) -> None:
        self.cadences, self.last_good = tuple(cadences), last_good
        self.bad_step: Tensor | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        self.bad_step = torch.full((), -1, dtype=torch.long, device=trainer.accelerator.device)

    def on_batch_end(self, trainer: Trainer, outputs: dict[str, Tensor]) -> None:
        finite = torch.isfinite(outputs["loss"])
        seen = self.bad_step >= 0
        self.bad_step = torch.where(finite | seen, self.bad_step, trainer.state.step + 1)

    def on_step_end(self, trainer: Trainer) -> None:
        if not due(trainer, *self.cadences):
            return
        # Every rank must stop at the same check, or the others wait in the next all-reduce.
        steps = trainer.accelerator.gather(self.bad_step[None]).tolist()
        bad = min((s for s in steps if s >= 0), default=-1)
        if bad >= 0:
            raise NonFiniteError(
                f"the loss became NaN or infinite at step {bad}; training stopped and nothing "
                f"after the previous checkpoint was saved ({self.last_good()}). Lower "
                f"optim.base_lr, enable train.grad_clip, or check the data."
            )
