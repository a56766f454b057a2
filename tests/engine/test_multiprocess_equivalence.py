"""Two processes with B samples each train as one process with 2B whose BatchNorm sees the same
per-process groups: the same gradients at every step and the same weights and queues after
several, for SimCLR and for every method with cross-process state (MoCo v2's gathered queue and
shuffled BN, MoCo v3's gathered negatives, SwAV's Sinkhorn sums and per-process queues,
DenseCL's two queues).

Both sides take the same views, made once here; rank r keeps rows [rB, (r+1)B). The
two-process side is the engine's (DDP over gloo, which averages the ranks' gradients; the
optimiser of the global batch); the one-process side is the same method with each BatchNorm
computing its statistics over each emulated process's rows (row i of a forward belongs to
process (i mod 2B) div B, as the views are stacked) and MoCo's key shuffle split into the two
emulated processes' batches (``shuffle_splits=2``: the same permutation, drawn from the same
seed). BatchNorm's running statistics are left out: under DDP they are rank 0's (broadcast each
forward), and no training step reads them. A gathered queue receives the same keys in another
order within a step ([rank 0's view-2 keys, its view-1 keys, rank 1's ...] against [view-2 keys,
view-1 keys]), and a per-process queue holds half the rows on each rank, so queues are compared
as sets of rows (the queue length is a multiple of the keys a step enqueues, so no key's survival
depends on that order).

Precision: float64. A ResNet with BatchNorm over 8 rows of small images is chaotic: for a
ResNet-18 at 32 px a 1e-6 relative change of the weights moved its gradients by 5% within a step
(measured), so float32 rounding alone would separate the two sides after one step. The backbone
is timm's 0.4M-parameter ``test_resnet`` (every step's float64 gradients of a ResNet-18 made
4 GB of files). In float64, at 16 px, the largest gap relative to a tensor's largest magnitude
measured 9.8e-14 for the gradients and 4.6e-14 for the weights and queues after step 3; the test
allows 1e-9. BatchNorm over the whole batch instead of each process's rows gave gaps of 1.7 to
4.4 (measured), and a gather that kept only the local rows stopped the run; a missing all-reduce,
a queue fed from one rank or a Sinkhorn over one rank's scores gives gaps of order 1.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sslvision.augment.pipeline import ViewPipeline
from sslvision.augment.views import Views, ViewStack
from sslvision.config import load_config
from sslvision.engine.optim import build_optimizer
from sslvision.engine.trainer import resolve_views
from sslvision.methods.base import Method, Progress
from sslvision.methods.registry import build_method

REPO = Path(__file__).resolve().parents[2]
PER_PROCESS, WORLD, STEPS, IMAGE = 4, 2, 3, 16
SMALL = [
    "model.backbone=timm:test_resnet",  # timm's 0.4M-parameter ResNet: BatchNorm, 30x fewer weights
    "method.proj_hidden_dim=32",
    "method.proj_output_dim=16",
    "train.batch_size=4",
    "augment.size=16",
]
METHODS = {
    "simclr": SMALL,
    "mocov2": [*SMALL, "method.queue_length=16", "method.shuffle_splits=2"],
    "mocov3": SMALL,
    "swav": [
        *SMALL,
        "method.num_prototypes=10",
        "method.freeze_prototypes_steps=1",
        "method.queue_start_epoch=0",
        "method.queue_length=8",  # per process: full after 2 steps, in the Sinkhorn of step 3
        "augment.views.0.size=16",
        "augment.views.1.size=8",
    ],
    "densecl": [*SMALL, "method.queue_length=16", "method.shuffle_splits=2"],
}
PER_PROCESS_QUEUES = {"swav"}  # each process holds its own rows; one process holds them all
RELATIVE_GAP = 1e-9  # of a tensor's largest magnitude; see the module docstring
BN_RUNNING = ("running_mean", "running_var", "num_batches_tracked")

pytestmark = pytest.mark.slow


def _config(method: str, world: int):
    overrides = METHODS[method]
    if method in PER_PROCESS_QUEUES and world == 1:  # one queue holds both processes' rows
        overrides = [*overrides, "method.queue_length=16"]
    return load_config(REPO / "configs" / method / "demo.yaml", overrides)


def _batches(method: str) -> list[dict]:
    """The whole batch's views of every step, made once in the test process: each process
    reads the same tensors (kornia's float reductions round differently with another thread
    count, and this model would amplify a last-bit change)."""
    cfg = _config(method, WORLD)
    pipeline = ViewPipeline(resolve_views(cfg), cfg.augment.mean, cfg.augment.std)
    batches = []
    for step in range(1, STEPS + 1):
        torch.manual_seed(1000 + step)
        images = torch.randint(0, 256, (PER_PROCESS * WORLD, 3, IMAGE, IMAGE), dtype=torch.uint8)
        views = pipeline(images, torch.zeros(len(images), dtype=torch.long))
        batches.append(
            {
                "images": [v.double() for v in views.images],
                "boxes": list(views.boxes),
                "flips": list(views.flips),
                "global_count": views.global_count,
                "labels": views.labels,
            }
        )
    return batches


def _views(batch: dict, rows: slice) -> Views:
    """Views of ``rows`` of a batch (all of it, or one process's share)."""
    return Views(
        images=ViewStack.of([v[rows] for v in batch["images"]]),
        boxes=ViewStack.of([b[rows] for b in batch["boxes"]]),
        flips=ViewStack.of([f[rows] for f in batch["flips"]]),
        global_count=batch["global_count"],
        labels=batch["labels"][rows],
    )


def _per_process_batch_norm(model: nn.Module) -> None:
    """Each BatchNorm of ``model`` normalises each emulated process's rows with their own
    statistics: row i of a forward belongs to process (i mod 2B) div B. A forward of B rows or
    fewer (a shuffled key chunk) is one process's batch."""

    def grouped(self: nn.Module, x: torch.Tensor, plain: Callable) -> torch.Tensor:
        if x.shape[0] <= PER_PROCESS:
            return plain(x)
        owner = (torch.arange(x.shape[0]) % (PER_PROCESS * WORLD)) // PER_PROCESS
        out = torch.empty_like(x)
        for process in range(WORLD):
            rows = (owner == process).nonzero().squeeze(1)
            out[rows] = plain(x[rows])
        return out

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            plain = module.forward
            module.forward = types.MethodType(lambda m, x, p=plain: grouped(m, x, p), module)


def _train(method_name: str, rank: int, world: int, batches: list[dict]) -> dict[str, Any]:
    """STEPS optimiser steps of ``method_name`` on ``batches``: every step's gradients, and
    the final state."""
    cfg = _config(method_name, world)
    torch.manual_seed(0)
    method: Method = build_method(cfg).double()
    if world == 1:
        _per_process_batch_norm(method)
    optimizer = build_optimizer(method, cfg.optim, PER_PROCESS * WORLD)
    model: nn.Module = method
    if world > 1:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            method, method.process_local_buffers()
        )
        model = DistributedDataParallel(method)
    gradients = []
    rows = slice(None) if world == 1 else slice(rank * PER_PROCESS, (rank + 1) * PER_PROCESS)
    for step, batch in enumerate(batches, start=1):
        torch.manual_seed(2000 + step)  # MoCo's key shuffle: rank 0's draw, or the one process's
        loss = model(_views(batch, rows))["loss"]
        optimizer.zero_grad()
        loss.backward()
        method.on_after_backward()
        grads = {
            name: p.grad.clone() for name, p in method.named_parameters() if p.grad is not None
        }
        gradients.append(grads)
        optimizer.step()
        method.on_step_end(Progress(step, STEPS, 0))
    state = {
        name: value.clone()
        for name, value in method.state_dict().items()
        if isinstance(value, torch.Tensor) and not name.endswith(BN_RUNNING)
    }
    return {"gradients": gradients, "state": state}


def _train_on_rank(rank: int, world: int, out_dir: Path) -> None:
    for method in METHODS:
        batches = torch.load(out_dir / f"{method}-batches.pt", weights_only=True)
        torch.save(_train(method, rank, world, batches), out_dir / f"{method}-rank{rank}.pt")


def _take(path: Path) -> Any:
    """Load ``path`` and delete it: every step's float64 gradients are the test's largest files."""
    value = torch.load(path, weights_only=True)
    path.unlink()
    return value


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory: pytest.TempPathFactory, distributed_run) -> Path:
    """Every method's batches and its two-process run, in one launch of the two processes."""
    out = tmp_path_factory.mktemp("ddp_equivalence")
    for method in METHODS:
        torch.save(_batches(method), out / f"{method}-batches.pt")
    distributed_run(_train_on_rank, out, world_size=WORLD)
    return out


@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_train_as_one_with_the_global_batch(
    method: str, two_process_runs: Path
) -> None:
    one = _train(method, 0, 1, _take(two_process_runs / f"{method}-batches.pt"))
    ranks = [_take(two_process_runs / f"{method}-rank{r}.pt") for r in range(WORLD)]
    for step, gradients in enumerate(one["gradients"]):
        for rank in ranks:  # DDP's all-reduce: every rank holds the averaged gradient
            assert rank["gradients"][step].keys() == gradients.keys()
            for name, grad in gradients.items():
                _assert_close(rank["gradients"][step][name], grad, f"step {step + 1}: {name}")
    for name, value in one["state"].items():
        if "queue" in name and value.ndim == 2:  # rows compared as a set, see the docstring
            if method in PER_PROCESS_QUEUES:
                _assert_close(
                    _row_set(torch.cat([r["state"][name] for r in ranks])), _row_set(value), name
                )
            else:
                for rank in ranks:
                    _assert_close(_row_set(rank["state"][name]), _row_set(value), name)
        elif not (method in PER_PROCESS_QUEUES and "queue" in name):  # per-process positions
            for rank in ranks:
                _assert_close(rank["state"][name], value, name)


def _row_set(rows: torch.Tensor) -> torch.Tensor:
    """A queue's rows in a fixed order (by first column), to compare them as a set."""
    return rows[torch.argsort(rows[:, 0])]


def gap(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest difference, relative to the largest magnitude of ``expected``."""
    if not expected.is_floating_point():
        return 0.0 if torch.equal(actual, expected) else float("inf")
    scale = expected.abs().max().clamp_min(torch.finfo(expected.dtype).tiny)
    return float((actual - expected).abs().max() / scale)


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    assert actual.shape == expected.shape, name
    assert gap(actual, expected) <= RELATIVE_GAP, f"{name}: gap {gap(actual, expected):.2e}"
