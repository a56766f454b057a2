"""Step anatomy: where a training step's time goes, for every method, so the slowest part shows.

Each method's recipe (``configs/<method>/<--recipe>.yaml``) runs ``--steps`` steps on synthetic
JPEG photographs (the same as ``gpu_profile.py``'s, written into a scratch folder) with the
engine's own parts: its loader (``training_data``), view pipeline (``views_of_batch``), method,
optimiser and the method's post-step bookkeeping. The benchmark drives them in the engine's
order with the device synchronised at each boundary, which a real step never does, to time:

- **data wait**: the main process waiting for the loader's next batch;
- **decode (workers)**: what one batch costs a worker to read, decode and crop, timed apart in
  the main process (it overlaps the step unless the workers fall behind, when it is data wait);
- **augmentation**: the batch to the device and every view made there;
- **forward**, **backward** (with the method's gradient surgery), **optimiser** (step and
  zeroing), **EMA / queue** (:meth:`Method.on_step_end`).

Then, on CUDA, it runs steps as the engine does, unsynchronised, under
``torch.cuda.set_sync_debug_mode("error")``: any operation that makes the host wait for the
device inside a step fails there and is reported by name. A CPU has no such check (it says so).

Run from the repository root::

    python benchmarks/step_anatomy.py [--recipe imagenette] [--methods simclr byol] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("sslvision") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_profile import synchronize, synthetic_recipe, write_photos  # noqa: E402

from sslvision.augment.pipeline import ViewPipeline  # noqa: E402
from sslvision.config import Config  # noqa: E402
from sslvision.engine.optim import build_optimizer  # noqa: E402
from sslvision.engine.trainer import training_data, views_of_batch  # noqa: E402
from sslvision.methods.base import Method, Progress  # noqa: E402
from sslvision.methods.registry import build_method  # noqa: E402

METHODS = ("simclr", "mocov2", "mocov3", "byol", "swav", "densecl", "pixpro")
PHASES = ("data wait", "augmentation", "forward", "backward", "optimiser", "EMA / queue")


class Step:
    """One method's step, split into the engine's phases."""

    def __init__(self, cfg: Config, device: torch.device) -> None:
        self.device = device
        memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.method: Method = build_method(cfg).to(device, memory_format=memory_format)
        self.optimizer = build_optimizer(self.method, cfg.optim, cfg.train.batch_size)
        views = cfg.augment.views
        self.pipeline = ViewPipeline(views, cfg.augment.mean, cfg.augment.std, memory_format)
        self.pipeline.to(device)
        self.sampler, self.loader = training_data(cfg, 0, 1, pin=device.type == "cuda")
        self.sampler.set_epoch(0)
        self.batches: Iterator[Any] = iter(self.loader)
        self.bf16 = cfg.train.precision == "bf16"
        self.steps_done = 0

    def phases(self) -> dict[str, Callable[[Any], Any]]:
        """Each phase as a function of the previous phase's result, in the engine's order."""

        def forward(views: Any) -> torch.Tensor:
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
                return self.method(views)["loss"]

        def backward(loss: torch.Tensor) -> None:
            loss.backward()
            self.method.on_after_backward()

        def optimiser(_: None) -> None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

        def bookkeeping(_: None) -> None:
            self.steps_done += 1
            self.method.on_step_end(Progress(self.steps_done, 10**6, 0))

        return {
            "data wait": lambda _: next(self.batches),
            "augmentation": lambda batch: views_of_batch(self.pipeline, batch, self.device),
            "forward": forward,
            "backward": backward,
            "optimiser": optimiser,
            "EMA / queue": bookkeeping,
        }

    def timed(self) -> dict[str, float]:
        """Seconds of each phase of one step, the device synchronised at every boundary."""
        seconds, value = {}, None
        for name, phase in self.phases().items():
            synchronize(self.device)
            started = time.perf_counter()
            value = phase(value)
            synchronize(self.device)
            seconds[name] = time.perf_counter() - started
        return seconds

    def unsynchronised(self) -> None:
        """One step as the engine runs it: no synchronisation anywhere."""
        value = None
        for phase in self.phases().values():
            value = phase(value)

    def decode_seconds(self) -> float:
        """What one batch costs a worker: the dataset's items read in this process."""
        dataset = self.loader.dataset
        indices = list(self.sampler)[: self.loader.batch_size]
        started = time.perf_counter()
        for index in indices:
            dataset[index]
        return time.perf_counter() - started


def host_syncs(step: Step, steps: int) -> str:
    """``"none"`` when ``steps`` unsynchronised steps never make the host wait for the device,
    else the error that names the first operation that did; ``"n/a"`` off CUDA."""
    if step.device.type != "cuda":
        return "n/a (no CUDA: a CPU runs every op on the host)"
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(steps):
            step.unsynchronised()
    except RuntimeError as error:
        return f"sync: {str(error).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return "none"


def recipe(method: str, photos: Path, args: argparse.Namespace) -> Config:
    overrides = [f"train.batch_size={args.batch_size}", f"train.precision={args.precision}"]
    return synthetic_recipe(method, args.recipe, photos, args.workers, overrides)


def anatomy(method: str, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    step = Step(recipe(method, data, args), torch.device(args.device))
    for _ in range(args.warmup_steps):
        step.timed()
    timings = [step.timed() for _ in range(args.steps)]
    ms = {name: 1e3 * statistics.median(t[name] for t in timings) for name in PHASES}
    ms["decode (workers)"] = 1e3 * step.decode_seconds()
    on_step = sum(ms[name] for name in PHASES)
    return {
        "method": method,
        "ms": {name: round(value, 2) for name, value in ms.items()},
        "step_ms": round(on_step, 2),
        "slowest": max(PHASES, key=ms.__getitem__),
        "host_syncs": host_syncs(step, args.sync_steps),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="imagenette", help="configs/<method>/<recipe>.yaml")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="timed steps; medians")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--sync-steps", type=int, default=3, help="steps of the sync check")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("no", "bf16"), default="bf16")
    parser.add_argument("--json", action="store_true", help="also print one JSON record last")
    args = parser.parse_args(argv)
    steps_needed = args.warmup_steps + args.steps + args.sync_steps
    records = []
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "photos"
        write_photos(data, args.batch_size * (steps_needed + 1))
        print(
            f"step anatomy, {args.recipe} recipes, batch {args.batch_size}, {args.device}, "
            f"{args.precision}; median ms of {args.steps} steps (share of the step)"
        )
        for method in args.methods:
            record = anatomy(method, data, args)
            records.append(record)
            shares = "  ".join(
                f"{name} {record['ms'][name]:.1f} ({record['ms'][name] / record['step_ms']:.0%})"
                for name in PHASES
            )
            print(
                f"  {method:>8}: step {record['step_ms']:.1f}  {shares}  "
                f"decode (workers) {record['ms']['decode (workers)']:.1f}; "
                f"slowest: {record['slowest']}; host syncs: {record['host_syncs']}",
                flush=True,
            )
    if args.json:
        print(json.dumps({"device": args.device, "recipe": args.recipe, "methods": records}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
