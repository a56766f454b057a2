"""One-file checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint holds everything a run needs to continue exactly where it stopped: model state
(backbone, heads, momentum copies, queues, prototypes), optimiser, scheduler, grad scaler, every
RNG, the step and the position inside the epoch, the resolved config, the package version and the
metrics so far.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.distributed as dist

import sslvision
from sslvision.errors import CheckpointError
from sslvision.nn.distributed import is_distributed

FORMAT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """Every RNG this process draws from, in a ``weights_only``-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def gather_from_every_process(state: Any) -> list[Any]:
    """``state`` from every process in rank order (one entry without a process group), for
    what differs between processes: RNGs, per-process queues.

    ``state`` travels as ``torch.save`` bytes: ``all_gather_object`` unpickles tensors inside
    objects with the ``weights_only`` loader, which rejects them.
    """
    if not is_distributed():
        return [state]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payloads: list[bytes | None] = [None] * dist.get_world_size()
    dist.all_gather_object(payloads, buffer.getvalue())
    return [torch.load(io.BytesIO(payload), weights_only=True) for payload in payloads]


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy(),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def first_nonfinite(state: Any, where: str = "") -> str | None:
    """The name of the first floating tensor in ``state`` (nested dicts and lists) holding a NaN
    or an infinity, or None: a checkpoint must never keep a diverged run's weights or BN buffers."""
    if isinstance(state, torch.Tensor):
        bad = state.is_floating_point() and not bool(torch.isfinite(state).all())
        return where or "tensor" if bad else None
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return None
    for key, value in items:
        found = first_nonfinite(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state``, stamped with the format and package version, to ``path`` atomically."""
    return atomic_save({"format": FORMAT_VERSION, "version": sslvision.__version__, **state}, path)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda file: torch.save(obj, file))


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """``write`` into ``path`` atomically: temp file in the same folder, fsync, rename, fsync of
    the folder. A crash at any moment leaves either the previous file or the new one, never a
    torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates owner-only files; checkpoints and caches are shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def read_state_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``; a missing or unreadable file names itself."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc


def is_training_checkpoint(state: Any) -> bool:
    """Whether ``state`` (what :func:`read_state_file` returned) is a training checkpoint."""
    return isinstance(state, dict) and "model" in state and "config" in state


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint (see :func:`read_state_file`) and check that it is one."""
    state = read_state_file(path, map_location)
    if not is_training_checkpoint(state):
        raise CheckpointError(f"{path} is not an sslvision checkpoint (no model/config entries)")
    return state


def backbone_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The backbone's weights out of a checkpoint's model state (what evaluators load)."""
    prefix = "backbone."
    weights = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    if not weights:
        raise CheckpointError("the checkpoint's model state has no 'backbone.' entries")
    return weights
