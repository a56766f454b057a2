"""The engine end to end on tiny generated data: training, resume after SIGKILL, NaN stop, and
the in-training kNN monitor."""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from sslvision.config import MonitorConfig, config_from_dict
from sslvision.engine.checkpoint import first_nonfinite, load_checkpoint
from sslvision.engine.trainer import train
from sslvision.errors import CheckpointError, ConfigError, NonFiniteError, RunDirectoryError
from sslvision.eval.encoders import load_encoder
from sslvision.eval.knn_eval import run_knn
from sslvision.eval.knn_probe import KNNProbe
from sslvision.methods.simclr import SimCLR

REPO = Path(__file__).resolve().parents[2]


SIMCLR = {"name": "simclr", "proj_hidden_dim": 32, "proj_output_dim": 16}
# A queue whose length (40) the batch (16) does not divide, so resume must restore a wrapped one.
MOCOV2 = {
    "name": "mocov2",
    "proj_hidden_dim": 32,
    "proj_output_dim": 16,
    "queue_length": 40,
    "symmetric": True,
}
# DenseCL keeps two queues (global and dense keys); both must come back wrapped as they were.
DENSECL = {**MOCOV2, "name": "densecl"}
# PixPro's teacher mirrors the pixel head (with BN buffers) and the instance projector.
PIXPRO = {
    "name": "pixpro",
    "proj_hidden_dim": 32,
    "proj_output_dim": 16,
    "instance_weight": 1.0,
    "pred_hidden_dim": 32,
}


def tiny_recipe(output_dir: Path, method: dict = SIMCLR, **train_overrides: object) -> dict:
    """A run of a few seconds: 96 synthetic 16 px images, batches of 16, 6 steps an epoch."""
    return {
        "name": "tiny",
        "output_dir": str(output_dir),
        "data": {"dataset": "synthetic", "image_size": 16, "num_images": 96, "num_workers": 0},
        "augment": {"recipe": "simclr", "size": 16},
        "method": method,
        "optim": {"warmup_epochs": 0.5},
        "train": {
            "epochs": 2,
            "batch_size": 16,
            "log_every": 2,
            "progress_bar": False,
            "deterministic": True,
            **train_overrides,
        },
        "checkpoint": {"save_every_steps": 1, "keep_every_epochs": 1},
    }


def test_train_writes_run_directory(tmp_path: Path) -> None:
    result = train(config_from_dict(tiny_recipe(tmp_path)))
    run = tmp_path / "tiny"
    assert result.step == 12
    assert (run / "config.yaml").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["augment"]["views"][0]["count"] == 2
    notes = (run / "config.yaml").read_text()  # what the run derived: its header comments
    assert "# world_size: 1\n" in notes and "# global_batch: 16\n" in notes
    assert f"# peak_lr: {0.3 * 16 / 256}\n" in notes  # base_lr x global batch / 256
    assert load_checkpoint(result.checkpoint)["scaling"]["peak_lr"] == 0.3 * 16 / 256
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    assert header == "step,epoch,loss,lr,images_per_s"
    assert len(rows) == 6
    assert list((run / "tensorboard").iterdir())
    assert {p.name for p in (run / "checkpoints").iterdir()} == {
        "last.pt",
        "epoch_0001.pt",
        "epoch_0002.pt",
    }
    ckpt = load_checkpoint(result.checkpoint)
    assert (ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]) == (12, 2, 0)
    assert {"model", "optimizer", "scheduler", "rng", "config", "metrics", "version"} <= set(ckpt)


def test_runs_with_different_precisions_follow_each_other(tmp_path: Path) -> None:
    for precision in ("no", "bf16"):
        recipe = tiny_recipe(tmp_path / precision, precision=precision, deterministic=False)
        # 32 px: at 16 px layer4.0.conv1 (stride 2) sees 1x1 maps, and CPU autocast's bf16 weight
        # gradient of such a convolution is NaN about once in 20 calls (torch 2.14.1, oneDNN).
        recipe["data"]["image_size"] = recipe["augment"]["size"] = 32
        assert train(config_from_dict(recipe)).step == 12


@pytest.mark.slow
def test_a_compiled_backbone_trains_and_saves_the_eager_state_keys(tmp_path: Path) -> None:
    """train.compile: the same first loss (same weights and views), the same checkpoint keys."""
    runs = {}
    for compiled in (False, True):
        recipe = tiny_recipe(tmp_path / str(compiled), max_steps=2, log_every=1, compile=compiled)
        recipe["model"] = {"backbone": "timm:test_resnet"}  # compiles in seconds on a CPU
        runs[compiled] = train(config_from_dict(recipe))
    eager, compiled = (load_checkpoint(runs[c].checkpoint)["model"] for c in (False, True))
    assert eager.keys() == compiled.keys()
    first = [runs[c].metrics[0]["loss"] for c in (False, True)]
    assert first[1] == pytest.approx(first[0], rel=1e-4)


def test_gradient_accumulation_steps_the_optimiser_once_per_group(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, grad_accum_steps=3, log_every=1)
    result = train(config_from_dict(recipe))
    assert result.step == 4  # 96 images / (16 x 3) a step, for 2 epochs
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["scheduler"]["last_epoch"] == 4
    assert [(row["step"], row["epoch"]) for row in result.metrics] == [
        (1, 0),
        (2, 0),
        (3, 1),
        (4, 1),
    ]


def _run_cli(recipe: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "sslvision.cli", "pretrain", str(recipe), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("method", [SIMCLR, MOCOV2, DENSECL, PIXPRO], ids=lambda m: m["name"])
def test_resume_after_sigkill_is_bitwise_equal(
    tmp_path: Path, method: dict, sigkill_mid_epoch: Callable[..., int]
) -> None:
    recipes = {}
    for name in ("straight", "killed"):
        recipe = tiny_recipe(tmp_path / name, method, epochs=3)
        recipes[name] = tmp_path / f"{name}.yaml"
        recipes[name].write_text(yaml.safe_dump(recipe))
    straight = _run_cli(recipes["straight"])

    killed = _run_cli(recipes["killed"], "--resume", "auto")
    last = tmp_path / "killed" / "tiny" / "checkpoints" / "last.pt"
    step_at_kill = sigkill_mid_epoch(killed, last, 9)  # inside epoch 2
    assert 0 < step_at_kill < 18, "the run must be killed in the middle"

    resumed = _run_cli(recipes["killed"], "--resume", "auto")
    assert resumed.wait(timeout=180) == 0, resumed.stderr.read()
    assert straight.wait(timeout=180) == 0, straight.stderr.read()

    a = load_checkpoint(tmp_path / "straight" / "tiny" / "checkpoints" / "last.pt")
    b = load_checkpoint(last)
    assert a["step"] == b["step"] == 18
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():  # momentum encoder and queue included
        assert torch.equal(value, b["model"][key]), key
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert [r["step"] for r in a["metrics"]] == [r["step"] for r in b["metrics"]]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    original = SimCLR.training_step

    def poisoned(self, views):
        calls["n"] += 1
        out = original(self, views)
        if calls["n"] >= 5:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(SimCLR, "training_step", poisoned)
    recipe = tiny_recipe(tmp_path, log_every=100)
    recipe["checkpoint"] = {"save_every_steps": 2, "keep_every_epochs": 0}
    with pytest.raises(NonFiniteError, match="at step 5"):
        train(config_from_dict(recipe))
    ckpt = load_checkpoint(tmp_path / "tiny" / "checkpoints" / "last.pt")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


# The kNN monitor: the number `sslvision knn` gives, without disturbing training.
BANK, QUERIES = "synthetic:64", "synthetic:40"


def monitored(output_dir: Path, **monitor: object) -> dict:
    recipe = tiny_recipe(output_dir, log_every=5)
    recipe["monitor"] = {"train_data": BANK, "val_data": QUERIES, **monitor}
    return recipe


def test_probe_equals_sslvision_knn_of_the_final_checkpoint(tmp_path: Path) -> None:
    result = train(config_from_dict(monitored(tmp_path, knn_every=4, max_train=0, max_val=0)))
    probed = {row["step"]: row["knn_top1"] for row in result.metrics if "knn_top1" in row}
    assert sorted(probed) == [4, 8, 12]  # every 4 steps, the last step included
    record = run_knn(load_encoder(str(result.checkpoint)), BANK, QUERIES, ks=(20,), num_workers=0)
    assert probed[12] == record["knn_top1_k20"]

    with (tmp_path / "tiny" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "epoch", "loss", "lr", "images_per_s", "knn_top1"]
    cells = {int(row["step"]): row["knn_top1"] for row in rows}
    assert cells[5] == "" and float(cells[8]) == pytest.approx(probed[8])


def test_probing_leaves_training_bitwise_unchanged(tmp_path: Path) -> None:
    plain = train(config_from_dict(tiny_recipe(tmp_path / "plain", log_every=5)))
    probed = train(config_from_dict(monitored(tmp_path / "probed", knn_every=3)))
    assert [row["step"] for row in probed.metrics if "knn_top1" in row] == [3, 6, 9, 12]
    plain_state = load_checkpoint(plain.checkpoint)["model"]
    probed_state = load_checkpoint(probed.checkpoint)["model"]
    assert plain_state.keys() == probed_state.keys()
    for key, value in plain_state.items():
        assert torch.equal(value, probed_state[key]), key


def test_subsets_are_seeded_and_sized() -> None:
    cfg = MonitorConfig(knn_every=1, train_data=BANK, val_data=QUERIES, max_train=10, max_val=7)
    kwargs = {"image_size": 16, "num_workers": 0}
    first = KNNProbe(cfg, device=torch.device("cpu"), seed=3, **kwargs)
    again = KNNProbe(cfg, device=torch.device("cpu"), seed=3, **kwargs)
    other = KNNProbe(cfg, device=torch.device("cpu"), seed=4, **kwargs)
    images = [torch.cat([x for x, _ in m.bank]) for m in (first, again, other)]
    assert images[0].shape == (10, 3, 16, 16) and images[0].dtype == torch.uint8
    assert sum(len(y) for _, y in first.queries) == 7
    assert torch.equal(images[0], images[1]) and not torch.equal(images[0], images[2])


@pytest.mark.parametrize(
    ("monitor", "message"),
    [
        ({"knn_every": 5, "val_data": ""}, "monitor.val_data"),
        (
            {"knn_every": 5, "train_data": "", "val_data": ""},
            "monitor.train_data and monitor.val_data",
        ),
        ({"knn_every": -1}, "monitor.knn_every must be >= 0"),
        ({"knn_every": 5, "max_val": -2}, "monitor.max_val must be >= 0"),
        ({"knn_every": 5, "k": 0}, "monitor.k must be >= 1"),
    ],
)
def test_bad_monitor_settings_stop_before_training(
    tmp_path: Path, monitor: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        train(config_from_dict(monitored(tmp_path, **monitor)))
    assert not (tmp_path / "tiny").exists()


# Resume honours the new config; run directories are never clobbered; only finite state is saved.
def _logged_lr(metrics: list[dict]) -> dict[int, float]:
    return {row["step"]: row["lr"] for row in metrics}


def test_resume_with_more_epochs_continues_the_cosine_over_the_new_length(tmp_path: Path) -> None:
    short = tiny_recipe(tmp_path / "resumed", epochs=1, log_every=1)
    train(config_from_dict(short))
    longer = {**short, "train": {**short["train"], "epochs": 3}}
    resumed = train(config_from_dict(longer), resume="auto")
    fresh = train(config_from_dict({**longer, "output_dir": str(tmp_path / "fresh")}))
    assert resumed.step == fresh.step == 18
    after = {step: lr for step, lr in _logged_lr(resumed.metrics).items() if step > 6}
    assert after == pytest.approx({step: _logged_lr(fresh.metrics)[step] for step in after})
    assert sorted(after) == list(range(7, 19)) and all(lr > 0 for lr in after.values())


def test_resume_applies_a_new_base_lr(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, epochs=1, log_every=1)
    first = train(config_from_dict(recipe))
    lowered = {**recipe, "optim": {**recipe["optim"], "base_lr": 0.03}}
    lowered["train"] = {**recipe["train"], "epochs": 2}
    resumed = train(config_from_dict(lowered), resume="auto")
    old, new = _logged_lr(first.metrics), _logged_lr(resumed.metrics)
    assert new[6] == pytest.approx(old[6])  # the metrics so far are kept
    reference = train(config_from_dict({**lowered, "output_dir": str(tmp_path / "ref")}))
    assert new[7] == pytest.approx(_logged_lr(reference.metrics)[7])
    assert 0 < new[7] <= 0.03 * 16 / 256  # the new peak, a tenth of the old one


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"method": {**SIMCLR, "proj_output_dim": 8}}, "method.proj_output_dim"),
        ({"method": {"name": "byol", "proj_hidden_dim": 32, "proj_output_dim": 16}}, "method.name"),
        ({"data": {"dataset": "synthetic", "image_size": 24, "num_images": 96}}, "data.image_size"),
    ],
)
def test_resume_refuses_settings_that_cannot_change(tmp_path: Path, change: dict, key: str) -> None:
    recipe = tiny_recipe(tmp_path, max_steps=2)
    train(config_from_dict(recipe))
    with pytest.raises(CheckpointError, match=re.escape(key)):
        train(config_from_dict({**recipe, **change}), resume="auto")


def test_a_fresh_run_never_replaces_a_run_directory(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, max_steps=2)
    first = train(config_from_dict(recipe))
    before = first.checkpoint.read_bytes()
    metrics = (tmp_path / "tiny" / "metrics.csv").read_text()
    with pytest.raises(RunDirectoryError, match=r"--resume auto.*--overwrite"):
        train(config_from_dict(recipe))
    assert first.checkpoint.read_bytes() == before
    assert (tmp_path / "tiny" / "metrics.csv").read_text() == metrics
    again = train(config_from_dict({**recipe, "seed": 1}), overwrite=True)
    assert again.step == 2 and again.checkpoint.read_bytes() != before


def test_a_second_run_into_a_locked_directory_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "tiny"
    run_dir.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"pid": owner.pid, "host": socket.gethostname(), "since": 0}
        (run_dir / ".lock").write_text(json.dumps(lock))
        with pytest.raises(RunDirectoryError, match=f"pid {owner.pid}"):
            train(config_from_dict(tiny_recipe(tmp_path, max_steps=1)))
    finally:
        owner.kill()
        owner.wait()
    # Its owner is gone: the lock is stale, the run takes it and releases it at the end.
    assert train(config_from_dict(tiny_recipe(tmp_path, max_steps=1))).step == 1
    assert not (run_dir / ".lock").exists()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux's /proc")
def test_a_lock_whose_owner_is_a_zombie_is_stale(tmp_path: Path) -> None:
    """A run killed with its launcher is a zombie until its new parent reaps it; its lock is
    taken over rather than refusing the resume."""
    run_dir = tmp_path / "tiny"
    run_dir.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", "pass"])  # exits; not reaped: a zombie
    try:
        stat = Path(f"/proc/{owner.pid}/stat")
        deadline = time.monotonic() + 30
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.05)
        lock = {"pid": owner.pid, "host": socket.gethostname(), "since": 0}
        (run_dir / ".lock").write_text(json.dumps(lock))
        assert train(config_from_dict(tiny_recipe(tmp_path, max_steps=1))).step == 1
    finally:
        owner.wait()


def test_temp_files_of_killed_saves_are_removed_at_the_next_start(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, max_steps=2)
    train(config_from_dict(recipe))
    leftover = tmp_path / "tiny" / "checkpoints" / ".last.pt.abc123.tmp"
    leftover.write_bytes(b"half a checkpoint")
    train(config_from_dict({**recipe, "train": {**recipe["train"], "max_steps": 4}}), resume="auto")
    assert not leftover.exists()


def test_a_state_with_inf_batchnorm_buffers_is_never_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = SimCLR.on_step_end

    def poison_bn(self, progress):  # a finite loss, but BN statistics blown up at step 3
        original(self, progress)
        if progress.step == 3:
            self.backbone.model.bn1.running_var.fill_(float("inf"))

    monkeypatch.setattr(SimCLR, "on_step_end", poison_bn)
    recipe = tiny_recipe(tmp_path, log_every=100)
    with pytest.raises(NonFiniteError, match=r"step 3.*backbone\.model\.bn1\.running_var"):
        train(config_from_dict(recipe))
    kept = load_checkpoint(tmp_path / "tiny" / "checkpoints" / "last.pt")
    assert kept["step"] == 2
    assert first_nonfinite(kept) is None


def test_first_nonfinite_names_the_nested_tensor() -> None:
    state = {"model": {"w": torch.ones(2)}, "optimizer": {"state": [{"m": torch.tensor([1.0])}]}}
    assert first_nonfinite(state) is None
    state["optimizer"]["state"][0]["m"][0] = float("nan")
    assert first_nonfinite(state) == "optimizer.state.0.m"
    assert (
        first_nonfinite({"step": torch.tensor(3), "rng": torch.zeros(4, dtype=torch.uint8)}) is None
    )
