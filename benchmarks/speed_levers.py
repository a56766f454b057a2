"""Speed levers: what each of the engine's speed settings gives, with and without it, side by side.

The engine turns on several things for speed: bf16 autocast, channels_last tensors, DataLoader
workers that decode while the model trains, multi-tensor (foreach) and fused optimiser steps,
pinned memory with non-blocking copies on CUDA, and, on request, ``torch.compile``. This script
measures each one against its absence in one process on one machine, so the ratios mean
something even where the absolute numbers depend on the hardware and its load:

- **end to end**: the method's recipe (``configs/<method>/<--recipe>.yaml``, SimCLR on Imagenette
  by default) trains ``--steps`` steps with the engine itself (``sslvision.engine.trainer.train``)
  on synthetic JPEG photographs (``gpu_profile.py``'s, written into a scratch folder). The
  baseline has every lever on (``train.precision=bf16``, ``train.channels_last=true``,
  ``data.num_workers=--workers``); each variant switches one off (float32, contiguous tensors, no
  workers), and with ``--compile`` one more switches ``train.compile=true`` on. The rate is the
  engine's own logged ``images_per_s`` after the first window (warm-up), as
  ``simclr_throughput.py`` reads it. The runs alternate over ``--rounds`` rounds (the order
  rotated each round) and the medians are reported, so a transient load hits every variant;
- **optimiser step alone**: on the parameters of the method's model with fake gradients, the
  median time of ``optimizer.step()`` for SGD with momentum, foreach (the engine's) against the
  per-tensor for-loop, and for AdamW, fused (the engine's) against foreach and the for-loop;
- **host-to-device transfer** (CUDA only): a uint8 batch of the recipe's shape copied from
  pinned memory with ``non_blocking=True`` (what the engine's loader gives on CUDA) against
  pageable memory. On a CPU it says it needs CUDA and skips.

Each ratio is *with the lever / without it*: above 1 the lever pays on this machine.

Run from the repository root::

    python benchmarks/speed_levers.py [--rounds 3] [--compile] [--json]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("sslvision") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_profile import synchronize, synthetic_recipe, write_photos  # noqa: E402
from simclr_throughput import measure_sslvision  # noqa: E402

from sslvision.config import Config  # noqa: E402
from sslvision.engine.optim import param_groups, scaled_lr  # noqa: E402
from sslvision.methods.registry import build_method  # noqa: E402

METHODS = tuple(sorted(p.name for p in (REPO_ROOT / "configs").iterdir() if p.is_dir()))
TRANSFER_NEEDS_CUDA = "needs CUDA (--device cuda): pinned memory only matters for a copy to a GPU"


@dataclass(frozen=True)
class Variant:
    """One end-to-end run: ``overrides`` on top of the baseline's, for ``lever``.

    ``lever_on``: the variant has the lever on and the baseline has it off (``torch.compile``);
    otherwise the variant is the baseline with the lever switched off.
    """

    name: str
    lever: str
    overrides: tuple[str, ...]
    lever_on: bool = False


def variants(args: argparse.Namespace) -> list[Variant]:
    """The baseline (every lever on) and one run per lever switched off, or on for compile."""
    runs = [
        Variant("baseline", "", ()),
        Variant("precision=no", "bf16", ("train.precision=no",)),
        Variant("channels_last=false", "channels_last", ("train.channels_last=false",)),
    ]
    if args.workers > 0:
        runs.append(Variant("num_workers=0", "workers", ("data.num_workers=0",)))
    if args.compile:
        runs.append(Variant("compile=true", "compile", ("train.compile=true",), lever_on=True))
    return runs


def run_config(
    args: argparse.Namespace, photos: Path, out: Path, variant: Variant, round_: int
) -> Config:
    """The recipe on ``photos`` with every lever on, then ``variant``'s overrides."""
    overrides = [
        f"output_dir={out}",
        f"name={args.method}-{variant.name.replace('=', '-')}-r{round_}",
        f"train.batch_size={args.batch_size}",
        f"train.max_steps={args.steps}",
        "train.epochs=1000",
        f"train.log_every={args.log_every}",
        "train.progress_bar=false",
        "train.precision=bf16",
        "train.channels_last=true",
        "train.compile=false",
        "checkpoint.keep_every_epochs=0",
        *variant.overrides,
    ]
    return synthetic_recipe(args.method, args.recipe, photos, args.workers, overrides)


def end_to_end(
    args: argparse.Namespace, photos: Path, out: Path
) -> tuple[dict[str, list[float]], int]:
    """Images/s of every variant in every round, the variants' order rotated each round, and
    the number of timed steps of each run."""
    runs = variants(args)
    rates: dict[str, list[float]] = {v.name: [] for v in runs}
    timed_steps = 0
    for round_ in range(args.rounds):
        shift = round_ % len(runs)
        for variant in runs[shift:] + runs[:shift]:
            cfg = run_config(args, photos, out, variant, round_)
            measured = measure_sslvision(cfg)
            rate, timed_steps = measured.images_per_s, measured.images // args.batch_size
            rates[variant.name].append(rate)
            print(f"  round {round_ + 1}: {variant.name:<20} {rate:8.1f} images/s", flush=True)
            shutil.rmtree(cfg.run_dir, ignore_errors=True)  # its checkpoint, some 100 MB
            gc.collect()  # let its loader workers exit before the next run starts its own
    return rates, timed_steps


def lever_records(args: argparse.Namespace, rates: dict[str, list[float]]) -> dict[str, Any]:
    """Each lever's median images/s and its ratio with the lever / without it."""
    base = statistics.median(rates["baseline"])
    levers: dict[str, Any] = {}
    for variant in variants(args)[1:]:
        rate = statistics.median(rates[variant.name])
        levers[variant.lever] = {
            "run": variant.name,
            "overrides": list(variant.overrides),
            "lever_on_in_run": variant.lever_on,
            "images_per_s": round(rate, 2),
            "rounds_images_per_s": [round(r, 2) for r in rates[variant.name]],
            "ratio": round(rate / base if variant.lever_on else base / rate, 3),
        }
    return {
        "baseline": {
            "images_per_s": round(base, 2),
            "rounds_images_per_s": [round(r, 2) for r in rates["baseline"]],
        },
        "levers": levers,
    }


def median_ms(call: Callable[[], None], device: torch.device, repeats: int, warmup: int) -> float:
    """Median milliseconds of ``call()``, the device synchronised around each."""
    for _ in range(warmup):
        call()
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def optimiser_steps(cfg: Config, device: torch.device, repeats: int) -> dict[str, Any]:
    """``optimizer.step()`` alone on the method's parameters with fake gradients: SGD foreach
    against the for-loop, AdamW fused against foreach and the for-loop (median ms)."""
    torch.manual_seed(cfg.seed)
    method = build_method(cfg).to(device)
    params = [p for p in method.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p).mul_(1e-3)
    groups = param_groups(method, cfg.optim)
    lr = scaled_lr(cfg.optim, cfg.train.batch_size)

    def step_ms(make: Callable[[list[dict]], torch.optim.Optimizer]) -> float:
        optimizer = make([dict(group) for group in groups])
        ms = median_ms(optimizer.step, device, repeats, warmup=2)  # the first allocates state
        del optimizer
        gc.collect()
        return ms

    momentum, betas = cfg.optim.momentum, cfg.optim.betas
    sgd = {
        "foreach_ms": step_ms(lambda g: torch.optim.SGD(g, lr=lr, momentum=momentum, foreach=True)),
        "for_loop_ms": step_ms(
            lambda g: torch.optim.SGD(g, lr=lr, momentum=momentum, foreach=False)
        ),
    }
    sgd["ratio"] = sgd["for_loop_ms"] / sgd["foreach_ms"]
    adamw = {
        "fused_ms": step_ms(lambda g: torch.optim.AdamW(g, lr=lr, betas=betas, fused=True)),
        "foreach_ms": step_ms(lambda g: torch.optim.AdamW(g, lr=lr, betas=betas, foreach=True)),
        "for_loop_ms": step_ms(
            lambda g: torch.optim.AdamW(g, lr=lr, betas=betas, foreach=False, fused=False)
        ),
    }
    adamw["ratio_over_foreach"] = adamw["foreach_ms"] / adamw["fused_ms"]
    adamw["ratio_over_for_loop"] = adamw["for_loop_ms"] / adamw["fused_ms"]
    return {
        "device": str(device),
        "parameters": sum(p.numel() for p in params),
        "tensors": len(params),
        "repeats": repeats,
        "sgd": {key: round(value, 3) for key, value in sgd.items()},
        "adamw": {key: round(value, 3) for key, value in adamw.items()},
    }


def batch_shapes(cfg: Config) -> list[tuple[int, ...]]:
    """The uint8 tensors of one loader batch: the squares of ``data.image_size``, or each view
    group's crops with ``data.crop=original``."""
    batch = cfg.train.batch_size
    if cfg.data.crop == "original":
        return [(batch, g.count, 3, g.size, g.size) for g in cfg.augment.views]
    return [(batch, 3, cfg.data.image_size, cfg.data.image_size)]


def transfer(cfg: Config, device: torch.device, repeats: int) -> dict[str, Any]:
    """One uint8 batch to ``device``: pinned with ``non_blocking=True`` against pageable."""
    if device.type != "cuda":
        return {"skipped": TRANSFER_NEEDS_CUDA}
    shapes = batch_shapes(cfg)
    pageable = [torch.randint(0, 256, shape, dtype=torch.uint8) for shape in shapes]
    pinned = [tensor.pin_memory() for tensor in pageable]
    size = sum(tensor.numel() for tensor in pageable)

    def copy(tensors: list[torch.Tensor], non_blocking: bool) -> None:
        for tensor in tensors:
            tensor.to(device, non_blocking=non_blocking)

    pageable_ms = median_ms(lambda: copy(pageable, False), device, repeats, warmup=3)
    pinned_ms = median_ms(lambda: copy(pinned, True), device, repeats, warmup=3)
    return {
        "shapes": [list(shape) for shape in shapes],
        "bytes": size,
        "pageable_ms": round(pageable_ms, 4),
        "pinned_ms": round(pinned_ms, 4),
        "pageable_gb_per_s": round(size / pageable_ms / 1e6, 2),
        "pinned_gb_per_s": round(size / pinned_ms / 1e6, 2),
        "ratio": round(pageable_ms / pinned_ms, 3),
    }


def print_table(record: dict[str, Any], args: argparse.Namespace) -> None:
    """The readable report of ``record``."""
    print(
        f"\nspeed levers: {args.method} {args.recipe} recipe, batch {args.batch_size}, "
        f"views {'/'.join(map(str, record['view_sizes']))} px, "
        f"{args.steps} steps ({record['timed_steps']} timed), "
        f"{args.workers} workers, engine on {record['engine_device']}, "
        f"{record['torch_threads']} torch threads, median of {args.rounds} round(s)"
    )
    print("ratio = images/s with the lever / without it (above 1: the lever pays here)")
    print(f"  {'run':<22} {'lever':<14} {'images/s':>9} {'ratio':>7}")
    print(f"  {'baseline (all on)':<22} {'':<14} {record['baseline']['images_per_s']:>9.1f}")
    for lever, entry in record["levers"].items():
        print(
            f"  {entry['run']:<22} {lever:<14} {entry['images_per_s']:>9.1f} "
            f"{entry['ratio']:>6.2f}x"
        )
    opt = record["optimizer"]
    print(
        f"optimiser step alone on {opt['device']}: {opt['parameters'] / 1e6:.1f} M parameters in "
        f"{opt['tensors']} tensors, median ms of {opt['repeats']}"
    )
    sgd, adamw = opt["sgd"], opt["adamw"]
    print(
        f"  SGD momentum  foreach {sgd['foreach_ms']:8.2f}  for-loop {sgd['for_loop_ms']:8.2f}"
        f"  foreach gives {sgd['ratio']:.2f}x"
    )
    print(
        f"  AdamW         fused   {adamw['fused_ms']:8.2f}  foreach  {adamw['foreach_ms']:8.2f}"
        f"  for-loop {adamw['for_loop_ms']:8.2f}  fused gives {adamw['ratio_over_foreach']:.2f}x"
        f" over foreach, {adamw['ratio_over_for_loop']:.2f}x over the for-loop"
    )
    moved = record["transfer"]
    if "skipped" in moved:
        print(f"host-to-device transfer: {moved['skipped']}; skipped on {args.device}")
    else:
        print(
            f"host-to-device transfer of one uint8 batch ({moved['bytes'] / 1e6:.1f} MB): "
            f"pageable {moved['pageable_ms']:.3f} ms ({moved['pageable_gb_per_s']:.1f} GB/s), "
            f"pinned non-blocking {moved['pinned_ms']:.3f} ms "
            f"({moved['pinned_gb_per_s']:.1f} GB/s): pinned gives {moved['ratio']:.2f}x"
        )


HELP_EPILOG = """\
what it runs:
  end to end   the recipe trains --steps steps with the engine on synthetic JPEGs: a baseline
               with every lever on (bf16 autocast, channels_last, --workers loader workers), then
               one run per lever switched off (precision=no, channels_last=false, num_workers=0)
               and, with --compile, one with train.compile=true; --rounds rounds, medians
  optimiser    optimizer.step() alone on the method's parameters with fake gradients: SGD
               momentum foreach vs the for-loop, AdamW fused vs foreach vs the for-loop
  transfer     on CUDA only: one uint8 batch of the recipe's shape, pinned + non_blocking vs
               pageable

Each ratio is the speed with the lever over the speed without it: above 1, the lever pays on
this machine. The end-to-end runs train on the engine's device (the GPU when there is one);
--device sets where the optimiser and transfer parts run.
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0],
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--method", choices=METHODS, default="simclr", help="default: simclr")
    parser.add_argument("--recipe", default="imagenette", help="configs/<method>/<recipe>.yaml")
    parser.add_argument("--batch-size", type=int, default=64, help="per step (default 64)")
    parser.add_argument("--steps", type=int, default=12, help="training steps of each run")
    parser.add_argument(
        "--log-every", type=int, default=4, help="the engine's log window; the first is warm-up"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="the baseline's DataLoader workers (0: no lever)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of all runs; medians")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also run with train.compile=true (about a minute of compiling on a CPU)",
    )
    parser.add_argument(
        "--optim-repeats", type=int, default=20, help="timed optimiser steps; median"
    )
    parser.add_argument(
        "--transfer-repeats", type=int, default=50, help="timed batch copies; median"
    )
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where the optimiser and transfer parts run (default: cuda when there is one)",
    )
    parser.add_argument("--json", action="store_true", help="also print one JSON record last")
    args = parser.parse_args(argv)
    for name in ("batch_size", "steps", "log_every", "rounds", "optim_repeats", "transfer_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.steps <= args.log_every:
        parser.error("--steps must exceed --log-every: the first logged window is warm-up")
    if args.workers < 0:
        parser.error("--workers must be 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("speed_levers: --device cuda but no CUDA device on this machine", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="speed_levers_") as scratch:
        photos = Path(scratch) / "photos"
        write_photos(photos, args.batch_size * (args.steps + 2))  # all steps inside one epoch
        print(f"speed levers: {len(variants(args))} runs a round, {args.rounds} round(s)")
        rates, timed = end_to_end(args, photos, Path(scratch) / "runs")
        cfg = run_config(args, photos, Path(scratch) / "runs", variants(args)[0], 0)
    engine_device = "cuda" if torch.cuda.is_available() else "cpu"
    record: dict[str, Any] = {
        "benchmark": "speed_levers",
        "method": args.method,
        "recipe": args.recipe,
        "batch_size": args.batch_size,
        "image_size": cfg.data.image_size,
        "view_sizes": sorted({group.size for group in cfg.augment.views}, reverse=True),
        "steps": args.steps,
        "timed_steps": timed,
        "log_every": args.log_every,
        "workers": args.workers,
        "rounds": args.rounds,
        "engine_device": engine_device,
        "device": str(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        **lever_records(args, rates),
        "optimizer": optimiser_steps(cfg, device, args.optim_repeats),
        "transfer": transfer(cfg, device, args.transfer_repeats),
    }
    print_table(record, args)
    if args.json:
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
