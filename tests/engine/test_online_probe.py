"""The online linear probe: pretraining bitwise unchanged by it, a head that learns an easy
problem, view 0 of the online backbone captured once per micro-batch for dense and momentum
methods, a resume that continues the head, and a bad learning rate refused by name."""

from __future__ import annotations

import copy
import csv
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import Tensor, nn

from sslvision.augment.views import Views, ViewStack
from sslvision.backbones import Backbone
from sslvision.config import MethodConfig, config_from_dict
from sslvision.engine.callbacks import OnlineLinearProbe
from sslvision.engine.checkpoint import load_checkpoint
from sslvision.engine.trainer import train
from sslvision.errors import ConfigError
from sslvision.methods.base import Method

BATCH = 8
SIMCLR = {"name": "simclr", "proj_hidden_dim": 32, "proj_output_dim": 16}


def tiny_recipe(
    output_dir: Path, method: dict = SIMCLR, online_linear: bool = True, **train_: object
) -> dict:
    """A few steps on 64 synthetic 16 px images, batches of 8, with or without the probe."""
    return {
        "name": "tiny",
        "output_dir": str(output_dir),
        "data": {"dataset": "synthetic", "image_size": 16, "num_images": 64, "num_workers": 0},
        "augment": {"size": 16},
        "model": {"backbone": "resnet18", "small_stem": True},
        "method": method,
        "optim": {"warmup_epochs": 0.5},
        "train": {
            "epochs": 1,
            "max_steps": 4,
            "batch_size": BATCH,
            "log_every": 2,
            "precision": "no",
            "progress_bar": False,
            "deterministic": True,
            **train_,
        },
        "checkpoint": {"keep_every_epochs": 0},
        "monitor": {"online_linear": online_linear},
    }


def test_the_probe_leaves_pretraining_bitwise_unchanged(tmp_path: Path) -> None:
    plain = train(config_from_dict(tiny_recipe(tmp_path / "plain", online_linear=False)))
    probed = train(config_from_dict(tiny_recipe(tmp_path / "probed")))
    plain_state = load_checkpoint(plain.checkpoint)["model"]
    probed_state = load_checkpoint(probed.checkpoint)["model"]
    assert plain_state.keys() == probed_state.keys()  # the head is no part of the method
    for key, value in plain_state.items():
        assert torch.equal(value, probed_state[key]), key

    with (tmp_path / "probed" / "tiny" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[-1] == "online_linear_top1"
    assert [int(row["step"]) for row in rows] == [2, 4]
    assert all(0.0 <= float(row["online_linear_top1"]) <= 1.0 for row in rows)


def test_a_resumed_run_continues_the_probe_bitwise(tmp_path: Path, stop_at) -> None:
    recipe = {**tiny_recipe(tmp_path / "straight"), "checkpoint": {"save_every_steps": 1}}
    straight = train(config_from_dict(recipe))
    recipe["output_dir"] = str(tmp_path / "cut")
    assert train(config_from_dict(recipe), callbacks=[stop_at(2)]).step == 2
    resumed = train(config_from_dict(recipe), resume="auto")
    assert resumed.step == 4
    expected = load_checkpoint(straight.checkpoint)[OnlineLinearProbe.state_key]
    got = load_checkpoint(resumed.checkpoint)[OnlineLinearProbe.state_key]
    for key, value in expected["head"].items():
        assert torch.equal(value, got["head"][key]), key
    momentum = [s["momentum_buffer"] for s in expected["optimizer"]["state"].values()]
    assert all(
        torch.equal(m, s["momentum_buffer"])
        for m, s in zip(momentum, got["optimizer"]["state"].values(), strict=True)
    )


class Features(nn.Module):
    """A timm-like model whose features are its inputs, pooled as they are."""

    def forward_features(self, x: Tensor) -> Tensor:
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x


class FeatureMethod(Method):
    """Runs its backbone on view 0, after ``twin`` (a copy of the backbone) when there is one."""

    def __init__(self, dim: int) -> None:
        super().__init__(MethodConfig(), Backbone("features", Features(), dim))
        self.twin: nn.Module | None = None

    def training_step(self, views: Views) -> dict[str, Tensor]:
        if self.twin is not None:
            self.twin.forward_features(views.images[0] + 100)
        return {"loss": self.backbone.forward_features(views.images[0]).sum()}


def views_of(x: Tensor, labels: Tensor) -> Views:
    n = len(x)
    boxes, flips = torch.zeros(n, 4), torch.zeros(n, dtype=torch.bool)
    return Views(ViewStack.of([x]), ViewStack.of([boxes]), ViewStack.of([flips]), 1, labels)


def fake_trainer() -> SimpleNamespace:
    """What the probe reads of a trainer; no batch ends an epoch or the run."""
    AcceleratorState._reset_state()
    return SimpleNamespace(
        accelerator=Accelerator(cpu=True),
        state=SimpleNamespace(step=0),
        end_of_epoch=False,
        finished=False,
        stop_reason=None,
        step_metrics={},
    )


def test_the_head_learns_separable_features() -> None:
    method, trainer = FeatureMethod(dim=3), fake_trainer()
    probe = OnlineLinearProbe(method, 3, lr=0.1, cadences=(5,), device=torch.device("cpu"))
    probe.on_train_start(trainer)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for step in range(1, 21):
        labels = torch.randint(0, 3, (BATCH,), generator=generator)
        noise = 0.1 * torch.randn(BATCH, 3, generator=generator)
        method(views_of(F.one_hot(labels, 3).float() + noise, labels))
        probe.on_batch_end(trainer, {})
        trainer.state.step, trainer.step_metrics = step, {}
        probe.on_step_end(trainer)
        rows += trainer.step_metrics.values()
    probe.on_train_end(trainer)
    assert len(rows) == 4 and rows[0] < 1.0 and rows[-1] == 1.0
    assert "forward_features" not in vars(method.backbone)  # the class's again


def test_a_copy_of_the_backbone_is_never_captured(monkeypatch: pytest.MonkeyPatch) -> None:
    method, trainer = FeatureMethod(dim=3), fake_trainer()
    probe = OnlineLinearProbe(method, 3, lr=0.1, cadences=(1,), device=torch.device("cpu"))
    seen: list[Tensor] = []
    monkeypatch.setattr(probe, "update", lambda features, *_: seen.append(features))
    probe.on_train_start(trainer)
    method.twin = copy.deepcopy(method.backbone)  # as the kNN monitor copies it, hooks and all
    x = torch.randn(BATCH, 3)
    method(views_of(x, torch.zeros(BATCH, dtype=torch.long)))
    probe.on_batch_end(trainer, {})
    probe.on_train_end(trainer)
    assert len(seen) == 1 and torch.equal(seen[0], x)


def _one_head_on_two_ranks(rank: int, world_size: int, out_dir: Path) -> None:
    """Three steps of the probe on this rank's own features; save its head and its top-1."""
    env = {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": world_size, "LOCAL_WORLD_SIZE": 2}
    os.environ.update({key: str(value) for key, value in env.items()})
    method, trainer = FeatureMethod(dim=3), fake_trainer()
    probe = OnlineLinearProbe(method, 3, lr=0.1, cadences=(3,), device=torch.device("cpu"))
    probe.on_train_start(trainer)
    generator = torch.Generator().manual_seed(rank)
    for step in range(1, 4):
        labels = torch.randint(0, 3, (BATCH,), generator=generator)
        method(views_of(torch.randn(BATCH, 3, generator=generator), labels))
        probe.on_batch_end(trainer, {})
        trainer.state.step = step
        probe.on_step_end(trainer)
    probe.on_train_end(trainer)
    torch.save({"head": probe.head.state_dict(), **trainer.step_metrics}, out_dir / f"{rank}.pt")


@pytest.mark.slow
def test_processes_share_one_head_and_one_count(
    tmp_path: Path, distributed_run: Callable[..., None]
) -> None:
    distributed_run(_one_head_on_two_ranks, tmp_path)
    first, second = (torch.load(tmp_path / f"{rank}.pt") for rank in (0, 1))
    assert first["online_linear_top1"] == second["online_linear_top1"]  # summed over ranks
    for key, value in first["head"].items():  # the averaged gradients keep the heads equal
        assert torch.equal(value, second["head"][key]) and value.abs().sum() > 0, key


DENSE_AND_MOMENTUM = [
    {"name": "pixpro", "proj_hidden_dim": 32, "proj_output_dim": 16},  # never pools itself
    {"name": "densecl", "proj_hidden_dim": 32, "proj_output_dim": 16, "queue_length": 40},
    {"name": "byol", "proj_hidden_dim": 32, "proj_output_dim": 16, "pred_hidden_dim": 32},
]


@pytest.mark.parametrize("method", DENSE_AND_MOMENTUM, ids=lambda m: m["name"])
def test_every_micro_batch_gives_the_online_view_0(
    tmp_path: Path, method: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[torch.Size, torch.Size]] = []
    update = OnlineLinearProbe.update

    def recorded(self: OnlineLinearProbe, features: Tensor, labels: Tensor, *rest: object) -> None:
        calls.append((features.shape, labels.shape))
        update(self, features, labels, *rest)

    monkeypatch.setattr(OnlineLinearProbe, "update", recorded)
    recipe = tiny_recipe(tmp_path, method, max_steps=1, grad_accum_steps=2, log_every=1)
    result = train(config_from_dict(recipe))
    assert calls == [(torch.Size([BATCH, 512]), torch.Size([BATCH]))] * 2  # two micro-batches
    assert 0.0 <= result.metrics[-1]["online_linear_top1"] <= 1.0


@pytest.mark.parametrize("lr", [0, -0.1, float("nan")])
def test_a_bad_learning_rate_stops_before_training(tmp_path: Path, lr: float) -> None:
    recipe = tiny_recipe(tmp_path)
    recipe["monitor"]["online_linear_lr"] = lr
    with pytest.raises(ConfigError, match=r"monitor\.online_linear_lr must be > 0"):
        train(config_from_dict(recipe))
    assert not (tmp_path / "tiny").exists()
