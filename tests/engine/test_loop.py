"""The Trainer on its own, as the linear probe will use it: a head on fixed features, its hooks in
order, a resume from its state_dict bitwise equal to a run that never stopped, the stopwatch."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sslvision.data.sampler import ResumableSampler
from sslvision.engine.callbacks import Checkpointer, MetricsCallback
from sslvision.engine.checkpoint import read_state_file
from sslvision.engine.loop import Callback, LoopLength, Stopwatch, Trainer
from sslvision.engine.schedule import build_scheduler

FEATURES = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
LABELS = (FEATURES[:, 0] > 0).long()


def head_trainer(callbacks: list[Callback], grad_accum_steps: int = 1, steps: int = 12) -> Trainer:
    """A linear classifier on fixed features: 64 samples, batches of 8 (8 batches an epoch)."""
    AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=grad_accum_steps)
    torch.manual_seed(0)
    head = nn.Linear(8, 2)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5, momentum=0.9)
    scheduler = build_scheduler(optimizer, warmup_steps=2, total_steps=steps)
    sampler = ResumableSampler(len(FEATURES), seed=0)
    loader = DataLoader(TensorDataset(FEATURES, LABELS), batch_size=8, sampler=sampler)
    head, optimizer = accelerator.prepare(head, optimizer)

    def forward(batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": nn.functional.cross_entropy(head(x), y)}

    length = LoopLength(total_steps=steps, epochs=10, micro_per_epoch=8)
    return Trainer(
        accelerator=accelerator,
        model=head,
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        sampler=sampler,
        forward=forward,
        length=length,
        callbacks=callbacks,
    )


class Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_train_start(self, trainer: Trainer) -> None:
        self.calls.append("start")

    def on_after_backward(self, trainer: Trainer) -> None:
        self.calls.append("backward")

    def on_batch_end(self, trainer: Trainer, outputs: dict[str, torch.Tensor]) -> None:
        assert not outputs["loss"].requires_grad
        self.calls.append("batch")

    def on_step_end(self, trainer: Trainer) -> None:
        self.calls.append(f"step{trainer.state.step}")

    def on_train_end(self, trainer: Trainer) -> None:
        self.calls.append("end")


def test_hooks_run_in_order_with_one_step_per_accumulated_group() -> None:
    recorder = Recorder()
    result = head_trainer([recorder], grad_accum_steps=2, steps=2).fit()
    assert result.status == "finished" and result.state.step == 2
    group = ["backward", "batch", "backward", "batch"]
    assert recorder.calls == ["start", *group, "step1", *group, "step2", "end"]


def test_a_head_resumed_from_the_state_dict_matches_a_run_that_never_stopped(
    tmp_path: Path, stop_at
) -> None:
    straight = head_trainer([MetricsCallback(None, (4,), images_per_batch=8)])
    straight.fit()

    checkpointer = Checkpointer(tmp_path)
    stopped = head_trainer([stop_at(5, "asked"), MetricsCallback(None, (4,), 8), checkpointer])
    result = stopped.fit()
    assert (result.status, result.state.step, result.state.batch_in_epoch) == ("asked", 5, 5)

    resumed = head_trainer([MetricsCallback(None, (4,), 8)])
    resumed.load_state_dict(read_state_file(checkpointer.last_path))
    assert resumed.fit().state.step == 12
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    losses = [row["loss"] for row in straight.state.history]
    assert losses[-1] < losses[0]  # the head learned the sign of the first feature
    assert [row["step"] for row in resumed.state.history] == [4, 5, 8, 12]


def test_the_stopwatch_leaves_out_paused_time() -> None:
    clock = Stopwatch()
    with clock.paused():
        time.sleep(0.05)
    assert clock.elapsed() < 0.04
