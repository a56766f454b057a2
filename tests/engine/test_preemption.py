"""Preemption: a signal mid-epoch stops the run at the next step with a checkpoint, the CLI exits
with the documented status, and ``--resume auto`` finishes bitwise equal to an uninterrupted run;
with two processes a signal to one stops both at the same step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from sslvision.config import config_from_dict
from sslvision.engine.callbacks import PREEMPTED_EXIT_CODE
from sslvision.engine.checkpoint import load_checkpoint
from sslvision.engine.loop import Callback, Trainer
from sslvision.engine.trainer import train

REPO = Path(__file__).resolve().parents[2]
STEPS = 12  # 2 epochs of 6 steps (see tiny_recipe)


def tiny_recipe(output_dir: Path, **train_overrides: object) -> dict:
    """96 synthetic 16 px images, batches of 16: 6 steps an epoch; no periodic checkpoints, so
    the preemption's is the only one before the end."""
    return {
        "name": "tiny",
        "output_dir": str(output_dir),
        "data": {"dataset": "synthetic", "image_size": 16, "num_images": 96, "num_workers": 0},
        "augment": {"recipe": "simclr", "size": 16},
        "method": {"name": "simclr", "proj_hidden_dim": 32, "proj_output_dim": 16},
        "optim": {"warmup_epochs": 0.5},
        "train": {
            "epochs": 2,
            "batch_size": 16,
            "log_every": 100,
            "progress_bar": False,
            "deterministic": True,
            **train_overrides,
        },
        "checkpoint": {"save_every_steps": 0, "keep_every_epochs": 0},
    }


class SignalAt(Callback):
    """Sends ``signum`` to this process after optimiser step ``step`` (a stand-in for SLURM)."""

    def __init__(self, step: int, signum: signal.Signals = signal.SIGUSR1) -> None:
        self.step, self.signum = step, signum

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.state.step == self.step:
            os.kill(os.getpid(), self.signum)


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_checkpoint(a), load_checkpoint(b)
    assert first["step"] == second["step"] == STEPS
    assert first["model"].keys() == second["model"].keys()
    for key, value in first["model"].items():
        assert torch.equal(value, second["model"][key]), key
    for sa, sb in zip(
        first["optimizer"]["state"].values(), second["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2])  # USR2: SLURM's warning
def test_a_signal_mid_epoch_checkpoints_at_the_next_step_and_resume_is_bitwise(
    tmp_path: Path, signum: signal.Signals
) -> None:
    straight = train(config_from_dict(tiny_recipe(tmp_path / "straight")))
    recipe = tiny_recipe(tmp_path / "stopped")
    handler_before = signal.getsignal(signum)

    stopped = train(config_from_dict(recipe), callbacks=[SignalAt(3, signum)])
    assert stopped.status == "preempted"
    assert stopped.step == 4  # the step in flight when the signal came finished, then it stopped
    assert signal.getsignal(signum) is handler_before
    saved = load_checkpoint(stopped.checkpoint)
    assert (saved["step"], saved["epoch"], saved["batch_in_epoch"]) == (4, 0, 4)  # mid-epoch
    assert saved["metrics"][-1]["step"] == 4  # the loss since the last row is not lost

    resumed = train(config_from_dict(recipe), resume="auto")
    assert (resumed.status, resumed.step) == ("finished", STEPS)
    assert_same_weights(straight.checkpoint, resumed.checkpoint)


def _pretrain(recipe: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "sslvision.cli", "pretrain", str(recipe), *extra]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_rows(metrics_csv: Path, rows: int, run: subprocess.Popen) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if metrics_csv.exists() and len(metrics_csv.read_text().splitlines()) > rows:
            return
        assert run.poll() is None, run.stderr.read()[-4000:]
        time.sleep(0.05)
    raise AssertionError(f"{metrics_csv} never reached {rows} rows")


@pytest.mark.slow
def test_sigterm_to_the_cli_exits_with_the_preempted_status_and_resume_finishes_it(
    tmp_path: Path,
) -> None:
    recipes = {}
    for name in ("straight", "stopped"):
        recipes[name] = tmp_path / f"{name}.yaml"
        recipes[name].write_text(yaml.safe_dump(tiny_recipe(tmp_path / name, log_every=1)))
    straight = _pretrain(recipes["straight"])
    stopped = _pretrain(recipes["stopped"], "--resume", "auto")
    _wait_for_rows(tmp_path / "stopped" / "tiny" / "metrics.csv", 2, stopped)
    stopped.send_signal(signal.SIGTERM)
    out, err = stopped.communicate(timeout=180)
    assert stopped.returncode == PREEMPTED_EXIT_CODE, err[-4000:]
    assert "SIGTERM: stopping at step" in out
    last = tmp_path / "stopped" / "tiny" / "checkpoints" / "last.pt"
    assert 2 <= load_checkpoint(last)["step"] < STEPS

    resumed = _pretrain(recipes["stopped"], "--resume", "auto")
    assert resumed.wait(timeout=180) == 0, resumed.stderr.read()
    assert straight.wait(timeout=180) == 0, straight.stderr.read()
    assert_same_weights(tmp_path / "straight" / "tiny" / "checkpoints" / "last.pt", last)


def _signal_rank_one_at_step_three(rank: int, world_size: int, out_dir: Path) -> None:
    """Train in an already-joined gloo group; only rank 1 receives the signal."""
    env = {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": world_size, "LOCAL_WORLD_SIZE": 2}
    os.environ.update({key: str(value) for key, value in env.items()})
    recipe = tiny_recipe(out_dir, batch_size=8)
    result = train(config_from_dict(recipe), callbacks=[SignalAt(3)] if rank == 1 else [])
    (out_dir / f"rank{rank}.txt").write_text(f"{result.status} {result.step}")


@pytest.mark.slow
def test_a_signal_to_one_of_two_processes_stops_both_at_the_same_step(
    tmp_path: Path, distributed_run: Callable[..., None]
) -> None:
    distributed_run(_signal_rank_one_at_step_three, tmp_path)
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "preempted 4"
    assert load_checkpoint(tmp_path / "tiny" / "checkpoints" / "last.pt")["step"] == 4
