"""A run directory belongs to one run at a time, and a fresh run never replaces another's work.

Two runs with the same ``name`` would interleave ``metrics.csv`` and leave one run's config beside
the other's checkpoint; a fresh run into a finished run's directory would replace its ``last.pt``.
:func:`claim_run_dir` refuses both, and removes what killed saves left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sslvision.errors import RunDirectoryError

LOCK_NAME = ".lock"
# What a run writes into its directory; --overwrite removes exactly these.
RUN_OUTPUTS = ("checkpoints", "metrics.csv", "tensorboard", "config.yaml")


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process. A zombie is not: a run killed with its launcher
    stays one until its new parent reaps it (seconds, where init is slow), and holds nothing."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    try:  # Linux: the state is the first field after the parenthesised command name
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc (macOS), or it exited this instant
        return True
    return state != "Z"


def _read_lock(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # half-written or unreadable: its writer died while writing it


def _is_stale(owner: dict) -> bool:
    """A lock is stale when its owner was on this host and that process is gone."""
    if not owner:
        return True
    return owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", -1)))


def _take_lock(path: Path) -> None:
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
    for _ in range(2):  # a second try after removing a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read_lock(path)
            if not _is_stale(owner):
                raise RunDirectoryError(
                    f"{path.parent} is in use by another run (pid {owner.get('pid')} on "
                    f"{owner.get('host')}); give this run another name=..., or wait for it. "
                    f"If that run is gone, delete {path}."
                ) from None
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(record)
        return
    raise RunDirectoryError(f"could not take the lock {path}: another run keeps creating it")


def remove_stale_temp_files(ckpt_dir: Path) -> list[Path]:
    """Delete the temp files of saves that were killed half-way (``.<name>.*.tmp``)."""
    if not ckpt_dir.is_dir():
        return []
    stale = sorted(ckpt_dir.glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextmanager
def claim_run_dir(run_dir: Path, *, resuming: bool, overwrite: bool) -> Iterator[None]:
    """Hold ``run_dir`` for this run: locked against other runs, checked against clobbering.

    A fresh run (``resuming`` False) into a directory with a checkpoint stops unless
    ``overwrite``, which first removes the previous run's outputs. Call on the main process only.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_NAME
    _take_lock(lock)
    try:
        last = run_dir / "checkpoints" / "last.pt"
        if not resuming and last.exists():
            if not overwrite:
                raise RunDirectoryError(
                    f"{run_dir} already holds a run ({last}). Continue it with --resume auto, "
                    "start it again from scratch with --overwrite, or choose another name=..."
                )
            for name in RUN_OUTPUTS:
                target = run_dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
        remove_stale_temp_files(run_dir / "checkpoints")
        yield
    finally:
        lock.unlink(missing_ok=True)
