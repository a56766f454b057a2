"""SimCLR pretraining throughput: sslvision's engine against a conventional torchvision loop.

All variants run in one process, one after the other, on the same machine and data, with the
same ResNet-18, projection head, NT-Xent loss, view size, batch size, worker count and number of
timed steps. Throughput is end to end: data loading, augmentation, forward, backward and the
optimiser step are all inside the timed window.

- ``sslvision``: ``sslvision.engine.trainer.train`` itself (uint8 decode in the workers, batched
  kornia views on the device, both views in one channels_last forward, ``--precision`` autocast,
  bf16 by default). Its throughput is read from the metrics rows the engine logs, leaving out the
  first window as warm-up, so the number is the one users see in ``metrics.csv``.
- ``reference``: ``torchvision.datasets.ImageFolder`` with per-image torchvision transforms on
  PIL images in the workers, contiguous tensors, one forward per view, float32.
- ``reference+bf16`` (or ``+fp16``): the same loop under ``torch.autocast``, so that the table
  tells the precision's share of the gain from the pipeline's.

Run from the repository root::

    python benchmarks/simclr_throughput.py [--steps 20] [--json]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "imagenette_64" / "train"
if importlib.util.find_spec("sslvision") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from sslvision.augment.recipes import simclr_views  # noqa: E402
from sslvision.backbones import build_backbone  # noqa: E402
from sslvision.config import Config, config_from_dict  # noqa: E402
from sslvision.config.views import ViewGroup  # noqa: E402
from sslvision.engine.trainer import train  # noqa: E402
from sslvision.losses.ntxent import NTXentLoss  # noqa: E402
from sslvision.nn.heads import MLPHead  # noqa: E402


@dataclass
class Measurement:
    """Throughput of one variant over its timed steps."""

    variant: str
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageFolder split dir")
    parser.add_argument("--steps", type=int, default=20, help="timed optimiser steps")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=64, help="load and view size (px)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    parser.add_argument(
        "--precision",
        choices=("no", "bf16", "fp16"),
        default="bf16",
        help="sslvision's autocast (train.precision); the reference runs in float32 and again "
        "under this autocast, so the table separates the precision's gain from the pipeline's",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON record last")
    args = parser.parse_args(argv)
    for name in ("steps", "warmup_steps", "batch_size", "image_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.workers < 0:
        parser.error(f"--workers must be 0 or more, got {args.workers}")
    return args


def benchmark_config(args: argparse.Namespace, output_dir: str) -> Config:
    """The SimCLR run both variants share: Imagenette-64 recipe, stopped after the steps."""
    return config_from_dict(
        {
            "name": "simclr-throughput",
            "output_dir": output_dir,
            "data": {
                "dataset": "folder",
                "path": str(args.data),
                "image_size": args.image_size,
                "num_workers": args.workers,
            },
            "augment": {"recipe": "simclr", "size": args.image_size},
            "model": {"backbone": "resnet18", "small_stem": False},
            "method": {"name": "simclr", "temperature": 0.2},
            "optim": {"name": "sgd", "base_lr": 0.3, "weight_decay": 1.0e-4},
            "train": {
                "epochs": 1,
                "max_steps": args.warmup_steps + args.steps,
                "batch_size": args.batch_size,
                "log_every": args.warmup_steps,  # the first logged window is the warm-up
                "channels_last": True,
                "precision": args.precision,
                "progress_bar": False,
            },
            "checkpoint": {"keep_every_epochs": 0},
        }
    )


def measure_sslvision(cfg: Config) -> Measurement:
    """Train with the real engine and add up its logged windows after the warm-up one.

    Each row's ``images_per_s`` covers the steps since the previous row, so summing images and
    the seconds they took gives the exact rate over the timed steps (a plain mean of the rows
    would over-weight a short last window).
    """
    rows = train(cfg).metrics
    steps_done = [0] + [int(row["step"]) for row in rows]
    images, seconds = 0, 0.0
    for previous, row in zip(steps_done[1:-1], rows[1:], strict=True):
        window_images = (int(row["step"]) - previous) * cfg.train.batch_size
        images += window_images
        seconds += window_images / row["images_per_s"]
    return Measurement("sslvision", images, seconds)


class TwoViews:
    """Applies the same random transform twice to one PIL image (the usual SimCLR dataset)."""

    def __init__(self, transform: T.Compose) -> None:
        self.transform = transform

    def __call__(self, image: Any) -> tuple[Tensor, Tensor]:
        return self.transform(image), self.transform(image)


def reference_transform(group: ViewGroup, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """SimCLR's recipe as per-image torchvision transforms, with the numbers of ``group``."""
    return T.Compose(
        [
            T.RandomResizedCrop(group.size, scale=group.scale, ratio=group.ratio),
            T.RandomHorizontalFlip(group.hflip_p),
            T.RandomApply(
                [T.ColorJitter(group.brightness, group.contrast, group.saturation, group.hue)],
                p=group.jitter_p,
            ),
            T.RandomGrayscale(group.grayscale_p),
            T.RandomApply([T.GaussianBlur(group.blur_kernel_size, group.blur_sigma)], group.blur_p),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def reference_loader(
    cfg: Config, dataset: Any, device: torch.device, collate: Any = None
) -> DataLoader:
    """The conventional loader: shuffled, ``cfg``'s batch and workers, pinned on CUDA."""
    workers = cfg.data.num_workers
    return DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=workers > 0,
        collate_fn=collate,
    )


def measure_reference(
    cfg: Config, warmup_steps: int, steps: int, precision: str = "no"
) -> Measurement:
    """A typical hand-written SimCLR loop over the same model, loss and optimiser settings,
    under ``torch.autocast`` when ``precision`` is bf16 or fp16."""
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    (group,) = simclr_views(cfg.augment.size)
    transform = reference_transform(group, cfg.augment.mean, cfg.augment.std)
    dataset = datasets.ImageFolder(cfg.data.path, transform=TwoViews(transform))
    loader = reference_loader(cfg, dataset, device)
    backbone = build_backbone(cfg.model.backbone, small_stem=cfg.model.small_stem)
    method_cfg = cfg.method
    projector = MLPHead(
        backbone.feature_dim,
        method_cfg.proj_hidden_dim,
        method_cfg.proj_output_dim,
        method_cfg.proj_layers,
    )
    model = nn.Sequential(backbone, projector).to(device)
    criterion = NTXentLoss(method_cfg.temperature)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.optim.base_lr * cfg.train.batch_size / 256,
        momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
    )

    dtype = AUTOCAST_DTYPES.get(precision)  # None: float32
    model.train()
    batches = iter(loader)
    start = 0.0
    for step in range(warmup_steps + steps):
        if step == warmup_steps:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        (view_a, view_b), _ = next(batches)
        view_a = view_a.to(device, non_blocking=True)
        view_b = view_b.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = criterion(model(view_a), model(view_b))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    variant = "reference" if precision == "no" else f"reference+{precision}"
    return Measurement(variant, steps * cfg.train.batch_size, seconds)


def report(measurements: list[Measurement], args: argparse.Namespace) -> dict[str, Any]:
    """Print the table and return the JSON record."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"SimCLR ResNet-18, {args.image_size} px, batch {args.batch_size}, {args.workers} workers, "
        f"{args.steps} timed steps after {args.warmup_steps} warm-up, {device}, "
        f"{torch.get_num_threads()} torch threads"
    )
    print(f"{'variant':<16} {'images/s':>10} {'seconds':>9}")
    for m in measurements:
        print(f"{m.variant:<16} {m.images_per_s:>10.1f} {m.seconds:>9.2f}")
    by_name = {m.variant: m for m in measurements}
    ratio = by_name["sslvision"].images_per_s / by_name["reference"].images_per_s
    print(f"ratio sslvision / reference: {ratio:.2f}x")
    same_precision = by_name.get(f"reference+{args.precision}")
    if same_precision is not None:
        pipeline_ratio = by_name["sslvision"].images_per_s / same_precision.images_per_s
        print(f"ratio sslvision / {same_precision.variant} (same precision): {pipeline_ratio:.2f}x")
    record: dict[str, Any] = {
        "benchmark": "simclr_throughput",
        "device": device,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "data": str(args.data),
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "workers": args.workers,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "precision": args.precision,
    }
    for m in measurements:
        record[f"{m.variant}_images_per_s"] = round(m.images_per_s, 2)
        record[f"{m.variant}_seconds"] = round(m.seconds, 3)
    record["ratio"] = round(ratio, 3)
    if same_precision is not None:
        record["ratio_same_precision"] = round(pipeline_ratio, 3)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.is_dir():
        print(
            f"skipping the SimCLR throughput benchmark: data folder {args.data} not found "
            "(pass --data DIR, an ImageFolder split such as imagenette_64/train)"
        )
        return 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="simclr_throughput_") as output_dir:
        cfg = benchmark_config(args, output_dir)
        per_epoch = len(datasets.ImageFolder(cfg.data.path)) // args.batch_size
        if args.warmup_steps + args.steps > per_epoch:
            print(
                f"--warmup-steps + --steps must fit in one epoch ({per_epoch} steps of batch "
                f"{args.batch_size} in {args.data}), so that no epoch-end checkpoint or loader "
                "restart falls inside the timing",
                file=sys.stderr,
            )
            return 2
        measurements = [measure_sslvision(cfg)]
        gc.collect()  # let the engine's loader workers exit before the reference starts its own
        measurements.append(measure_reference(cfg, args.warmup_steps, args.steps))
        if args.precision != "no":
            gc.collect()
            measurements.append(
                measure_reference(cfg, args.warmup_steps, args.steps, args.precision)
            )
    record = report(measurements, args)
    if args.json:
        print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
