"""Training on two CPU processes over gloo, launched as the README shows: every method, runs killed
with SIGKILL and resumed (MoCo v2; SwAV with its per-process queue), a NaN loss on one rank only."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from sslvision.config import config_from_dict
from sslvision.engine import trainer
from sslvision.engine.checkpoint import load_checkpoint
from sslvision.engine.trainer import train
from sslvision.errors import NonFiniteError
from sslvision.methods.mocov2 import MoCoV2

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

# MoCo v2 gathers keys from both processes into its queue (40, which the global batch of 16 does
# not divide) and shuffles BN across them; 96 images split over 2 ranks give 6 steps of 8 an epoch.
RECIPE = {
    "name": "ddp",
    "data": {"dataset": "synthetic", "image_size": 16, "num_images": 96, "num_workers": 0},
    "augment": {"recipe": "simclr", "size": 16},
    "method": {
        "name": "mocov2",
        "proj_hidden_dim": 32,
        "proj_output_dim": 16,
        "queue_length": 40,
        "symmetric": True,
    },
    "optim": {"warmup_epochs": 0.5},
    "train": {
        "epochs": 3,
        "batch_size": 8,
        "log_every": 2,
        "progress_bar": False,
        "deterministic": True,
    },
    "checkpoint": {"save_every_steps": 1, "keep_every_epochs": 0},
}
# SwAV's queue is per process (each holds its own embeddings); it starts at once and wraps.
SWAV = {
    "name": "swav",
    "proj_hidden_dim": 32,
    "proj_output_dim": 16,
    "num_prototypes": 10,
    "freeze_prototypes_steps": 2,
    "queue_length": 24,
    "queue_start_epoch": 0,
}
STEPS = 18


def _recipe(path: Path, **sections: dict) -> Path:
    recipe = {**RECIPE, **sections, "output_dir": str(path.parent)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe))
    return path


def _launch(recipe: Path, port: int, *extra: str) -> subprocess.Popen:
    """``accelerate launch`` of ``sslvision pretrain`` on 2 CPU processes, in its own session."""
    command = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"),
        *("--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"),
        *("--dynamo_backend", "no", "--main_process_port", str(port)),
        *("-m", "sslvision.cli", "pretrain", str(recipe), *extra),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(run: subprocess.Popen) -> None:
    try:
        code = run.wait(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        raise
    assert code == 0, run.stderr.read()[-4000:]


def test_two_processes_train_one_run_with_both_ranks_state(
    tmp_path: Path, pick_free_port: Callable[[], int]
) -> None:
    monitor = {"knn_every": 4, "train_data": "synthetic", "val_data": "synthetic"}
    recipe = _recipe(tmp_path / "ddp.yaml", monitor={**monitor, "max_train": 64, "max_val": 32})
    _finish(_launch(recipe, pick_free_port()))

    run = tmp_path / "ddp"
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == STEPS  # each rank took half of every epoch
    first, second = ckpt["rng"]  # both ranks' RNGs, which drew different augmentations
    assert not torch.equal(first["torch"], second["torch"])
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(2, STEPS + 1, 2))
    assert [int(r["step"]) for r in rows if r["knn_top1"]] == [4, 8, 12, 16, 18]
    chance = 2 * math.log(41)  # the symmetric loss with a queue of 40
    assert all(0.0 < float(r["loss"]) < 1.5 * chance for r in rows)  # the ranks' mean, not sum


@pytest.mark.parametrize("method", ["simclr", "mocov3", "byol", "swav", "densecl", "pixpro"])
def test_every_method_trains_on_two_processes(
    method: str, tmp_path: Path, pick_free_port: Callable[[], int]
) -> None:
    """Each method's distributed parts (gathers, Sinkhorn sums, shuffle BN, queues) run for real."""
    overrides = ["data.num_images=64", "train.batch_size=8", "train.max_steps=3"]
    overrides += ["train.progress_bar=false", "checkpoint.keep_every_epochs=0"]
    recipe = REPO / "configs" / method / "demo.yaml"
    _finish(_launch(recipe, pick_free_port(), *overrides, f"output_dir={tmp_path}"))
    (last,) = tmp_path.glob("*/checkpoints/last.pt")
    ckpt = load_checkpoint(last)
    assert (ckpt["step"], len(ckpt["rng"])) == (3, 2)


@pytest.mark.parametrize("method", [RECIPE["method"], SWAV], ids=["mocov2", "swav-queue"])
def test_resume_of_a_killed_two_process_run_is_bitwise_equal(
    tmp_path: Path,
    pick_free_port: Callable[[], int],
    sigkill_mid_epoch: Callable[..., int],
    method: dict,
) -> None:
    straight = _launch(_recipe(tmp_path / "straight" / "ddp.yaml", method=method), pick_free_port())
    killed_recipe = _recipe(tmp_path / "killed" / "ddp.yaml", method=method)
    killed = _launch(killed_recipe, pick_free_port(), "--resume", "auto")
    last = tmp_path / "killed" / "ddp" / "checkpoints" / "last.pt"
    step_at_kill = sigkill_mid_epoch(killed, last, 9)  # inside epoch 2
    assert 0 < step_at_kill < STEPS, "the run must be killed in the middle"

    _finish(_launch(killed_recipe, pick_free_port(), "--resume", "auto"))
    _finish(straight)

    a = load_checkpoint(tmp_path / "straight" / "ddp" / "checkpoints" / "last.pt")
    b = load_checkpoint(last)
    assert a["step"] == b["step"] == STEPS
    bitwise = {"rtol": 0, "atol": 0}
    torch.testing.assert_close(a["model"], b["model"], **bitwise)  # momentum encoder, queues
    torch.testing.assert_close(a["process_local"], b["process_local"], **bitwise)  # SwAV's
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert [r["loss"] for r in a["metrics"]] == [r["loss"] for r in b["metrics"]]


def _nan_on_rank_one_at_step_six(rank: int, world_size: int, out_dir: Path) -> None:
    """Train in an already-joined gloo group (as torchrun's env describes it); rank 1's loss turns
    NaN at step 6, a checkpoint step at which rank 0's loss is still finite."""
    env = {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": world_size, "LOCAL_WORLD_SIZE": 2}
    os.environ.update({key: str(value) for key, value in env.items()})
    original, calls = MoCoV2.training_step, [0]

    def poisoned(self: MoCoV2, views: object) -> dict:
        calls[0] += 1
        out = original(self, views)
        if rank == 1 and calls[0] == 6:
            out["loss"] = out["loss"] * float("nan")
        return out

    MoCoV2.training_step = poisoned
    recipe = {**RECIPE, "output_dir": str(out_dir)}
    recipe["checkpoint"] = {"save_every_steps": 2, "keep_every_epochs": 0}
    try:
        train(config_from_dict(recipe))
    except NonFiniteError as error:
        (out_dir / f"rank{rank}.txt").write_text(str(error))


def test_a_nan_loss_on_one_rank_stops_every_rank(
    tmp_path: Path, distributed_run: Callable[..., None]
) -> None:
    distributed_run(_nan_on_rank_one_at_step_six, tmp_path)
    for rank in (0, 1):  # rank 0 did not wait forever at the next collective
        assert "at step 6" in (tmp_path / f"rank{rank}.txt").read_text()
    assert load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")["step"] == 4


def _swav_with_a_queue_per_process(rank: int, world_size: int, out_dir: Path) -> None:
    """Train SwAV in an already-joined gloo group and save this process's queue."""
    env = {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": world_size, "LOCAL_WORLD_SIZE": 2}
    os.environ.update({key: str(value) for key, value in env.items()})
    built = []
    original = trainer.build_method
    trainer.build_method = lambda cfg: built.append(original(cfg)) or built[-1]
    recipe = {**RECIPE, "method": SWAV, "output_dir": str(out_dir)}
    recipe["train"] = {**RECIPE["train"], "epochs": 1}
    train(config_from_dict(recipe))
    torch.save(built[0].queues.state_dict(), out_dir / f"queues{rank}.pt")


def test_each_process_keeps_its_own_swav_queue(
    tmp_path: Path, distributed_run: Callable[..., None]
) -> None:
    """DistributedDataParallel broadcasts rank 0's buffers before every forward; a per-process
    queue must be left out of that, or every rank would hold rank 0's embeddings."""
    distributed_run(_swav_with_a_queue_per_process, tmp_path)
    queues = [torch.load(tmp_path / f"queues{rank}.pt") for rank in (0, 1)]
    for crop in ("0", "1"):
        first, second = (q[f"{crop}.features"] for q in queues)
        assert int(queues[0][f"{crop}.count"]) == 24  # 6 steps of 8 embeddings filled it
        assert not (first[:, None] == second[None]).all(-1).any()  # no row in common
    saved = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")["process_local"]
    for rank, queue in enumerate(queues):  # the checkpoint keeps both processes' queues
        assert all(torch.equal(saved[rank][f"queues.{k}"], v) for k, v in queue.items())
