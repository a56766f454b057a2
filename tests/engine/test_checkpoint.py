from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import sslvision
from sslvision.engine.checkpoint import (
    FORMAT_VERSION,
    backbone_state,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sslvision.errors import CheckpointError

REPO_ROOT = Path(__file__).resolve().parents[2]


def small_state(marker: int = 0) -> dict:
    return {
        "model": {
            "backbone.conv.weight": torch.full((4, 3), float(marker)),
            "head.bias": torch.ones(2),
        },
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "step": 12,
        "epoch": 3,
        "config": {"name": "run", "optim": {"base_lr": 0.3, "betas": [0.9, 0.999]}},
        "metrics": [{"step": 10, "loss": 1.5}],
        "rng": rng_state(),
    }


def draws() -> tuple[torch.Tensor, np.ndarray, float, float, float]:
    return torch.rand(4), np.random.rand(4), np.random.randn(), random.random(), random.gauss(0, 1)


def test_save_load_round_trip_with_weights_only(tmp_path: Path) -> None:
    state = small_state(marker=5)
    path = save_checkpoint(state, tmp_path / "nested" / "last.pt")
    assert path == tmp_path / "nested" / "last.pt" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left behind

    raw = torch.load(path, weights_only=True)  # the contract: plain weights_only loading
    assert raw["format"] == FORMAT_VERSION and raw["version"] == sslvision.__version__
    loaded = load_checkpoint(path)
    torch.testing.assert_close(loaded["model"], state["model"])
    assert loaded["config"] == state["config"] and loaded["metrics"] == state["metrics"]
    assert (loaded["step"], loaded["epoch"]) == (12, 3)


def test_saving_again_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(small_state(marker=1), path)
    save_checkpoint(small_state(marker=2), path)
    assert load_checkpoint(path)["model"]["backbone.conv.weight"].eq(2).all()
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_rng_state_restores_torch_numpy_and_python_draws(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leaves a cached Gaussian in numpy's state
    path = save_checkpoint({"model": {}, "config": {}, "rng": rng_state()}, tmp_path / "rng.pt")
    expected = draws()
    draws()  # move every generator on
    set_rng_state(load_checkpoint(path)["rng"])
    again = draws()
    assert torch.equal(again[0], expected[0])
    np.testing.assert_array_equal(again[1], expected[1])
    assert again[2:] == expected[2:]


def test_backbone_state_strips_the_prefix() -> None:
    weights = backbone_state(small_state())
    assert list(weights) == ["conv.weight"]


def test_backbone_state_without_backbone_entries_is_an_error() -> None:
    with pytest.raises(CheckpointError, match=r"no 'backbone\.' entries"):
        backbone_state({"model": {"head.bias": torch.ones(2)}})


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "gone.pt"
    with pytest.raises(CheckpointError, match=f"checkpoint not found: {missing}"):
        load_checkpoint(missing)


def test_garbage_file_names_the_path(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a zip archive" * 10)
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {garbage}"):
        load_checkpoint(garbage)


def test_truncated_file_names_the_path(tmp_path: Path) -> None:
    path = save_checkpoint(small_state(), tmp_path / "last.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {path}"):
        load_checkpoint(path)


def test_file_without_model_or_config_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match=f"{path} is not an sslvision checkpoint"):
        load_checkpoint(path)


# The child saves ~200 MB states, each tensor filled with its generation number, to one path in a
# loop, so that a SIGKILL lands while a temp file is being written.
SAVE_FOREVER = textwrap.dedent(
    """
    import itertools, sys, torch
    from sslvision.engine.checkpoint import save_checkpoint

    for generation in itertools.count(1):
        model = {f"backbone.w{i}": torch.full((12_500_000,), float(generation)) for i in range(4)}
        save_checkpoint({"model": model, "config": {"generation": generation}}, sys.argv[1])
    """
)


def wait_for_partial_temp_file(folder: Path, child: subprocess.Popen, timeout: float) -> None:
    """Return once the child is part-way through writing a temp file (so a kill tears it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert child.poll() is None, f"the saving child exited early with code {child.returncode}"
        for temp in folder.glob(".last.pt.*.tmp"):
            try:
                if temp.stat().st_size > 1_000_000:
                    return
            except FileNotFoundError:  # renamed into place between glob and stat
                continue
        time.sleep(0.005)
    raise AssertionError(f"no temp checkpoint appeared in {folder} within {timeout} s")


@pytest.mark.slow
def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"backbone.w0": torch.zeros(3)}, "config": {"generation": 0}}, path)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    child = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(path)], env=env)
    try:
        wait_for_partial_temp_file(tmp_path, child, timeout=120)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL

    state = load_checkpoint(path)
    generation = state["config"]["generation"]
    if generation == 0:
        torch.testing.assert_close(state["model"], {"backbone.w0": torch.zeros(3)})
    else:  # a complete new state: every tensor whole and of its generation
        assert sorted(state["model"]) == [f"backbone.w{i}" for i in range(4)]
        for tensor in state["model"].values():
            assert tensor.shape == (12_500_000,) and tensor.eq(generation).all()

    leftovers = [p for p in tmp_path.iterdir() if p != path]
    assert leftovers, "the kill should have interrupted a save"
    assert all(p.name.startswith(".last.pt.") and p.suffix == ".tmp" for p in leftovers)
    assert list(tmp_path.glob("*.pt")) == [path]  # a checkpoint glob never picks up a temp file
    for temp in leftovers:  # ~200 MB each: do not leave them in pytest's kept tmp dirs
        temp.unlink()
