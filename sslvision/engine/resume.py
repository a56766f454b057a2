"""Resuming honours the new config: what may change mid-run applies, what may not is refused.

A checkpoint's optimiser and scheduler state carry the learning rates they were built with;
loading them as they are would keep the old schedule (more epochs: a learning rate of 0 for
every new step; a lower ``optim.base_lr`` after a NaN stop: no change). So the optimiser keeps
only its per-parameter state (momentum buffers, Adam moments) and takes its hyperparameters from
the new config, and the schedule is rebuilt from the new config at the restored step.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from sslvision.config import Config, to_dict
from sslvision.errors import CheckpointError

# Settings that fix the shapes of the state or the meaning of a step: a run cannot change them.
FIXED_KEYS = (
    "seed",
    "model",
    "method",
    "data.dataset",
    "data.path",
    "data.split",
    "data.image_size",
    "data.classes",
    "data.num_images",
    "train.batch_size",
    "train.grad_accum_steps",
)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}


def _fixed(key: str) -> bool:
    return any(key == fixed or key.startswith(fixed + ".") for fixed in FIXED_KEYS)


def check_resumable(checkpoint: dict[str, Any], cfg: Config, world_size: int, path: Path) -> None:
    """Refuse to resume ``checkpoint`` under ``cfg`` when a fixed setting or the world size
    differs; the message names each changed key."""
    saved = _flatten(checkpoint["config"])
    now = _flatten(to_dict(cfg))
    keys = saved.keys() | now.keys()
    changed = sorted(k for k in keys if _fixed(k) and saved.get(k) != now.get(k))
    if "method.name" in changed:  # another method: its other keys differ as a consequence
        changed = ["method.name"]
    if changed:
        details = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
        raise CheckpointError(
            f"cannot resume {path}: {details}. These cannot change mid-run "
            f"({', '.join(FIXED_KEYS)}); start a new run (another name=...) instead."
        )
    saved_world = len(checkpoint.get("rng", [])) or 1
    if saved_world != world_size:
        raise CheckpointError(
            f"cannot resume {path}: it was written by {saved_world} process(es), this run has "
            f"{world_size}; resume with the same number of processes"
        )


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load the per-parameter state of ``state``, keeping the hyperparameters ``optimizer`` was
    built with from the current config (learning rate, weight decay, momentum, betas)."""
    configured = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, settings in zip(optimizer.param_groups, configured, strict=True):
        group.update(settings)


def resume_schedule(scheduler: LambdaLR, step: int) -> None:
    """Put a freshly built ``scheduler`` at ``step``: the learning rate a run of the current
    config has after ``step`` optimiser steps."""
    scheduler.last_epoch = step - 1
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": on purpose
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()


def resume_path(resume: str | None, run_dir: Path) -> Path | None:
    """``auto`` -> the run's ``last.pt`` if it exists; a path -> that file; None -> fresh run."""
    if resume is None:
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"--resume: checkpoint not found: {path}")
    return path
