"""When a callback acts: every n steps, and at the boundaries where the host must look."""

from __future__ import annotations

from sslvision.engine.loop import Trainer


def every(trainer: Trainer, n: int) -> bool:
    """True every ``n`` optimiser steps (never for ``n`` = 0)."""
    return bool(n) and trainer.state.step % n == 0


def at_boundary(trainer: Trainer) -> bool:
    """True at the end of an epoch, of the run, or of a stop request: the steps whose state is
    always logged and saved."""
    return trainer.end_of_epoch or trainer.finished or trainer.stop_reason is not None


def due(trainer: Trainer, *cadences: int) -> bool:
    """True at a boundary or every ``n`` steps for any of ``cadences``."""
    return at_boundary(trainer) or any(every(trainer, n) for n in cadences)
