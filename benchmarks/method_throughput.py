"""Every method's pretraining throughput: sslvision's engine against a conventional loop over
the same networks and loss, at the same precision, side by side in one run.

For each method its Imagenette-64 recipe (``configs/<method>/imagenette.yaml``, on
``../shared/data/imagenette_64/train``) runs ``--warmup-steps`` + ``--steps`` steps twice:

- ``sslvision``: ``sslvision.engine.trainer.train`` itself (uint8 decode in the workers, the
  views batched on the device, each run of same-size views in one channels_last forward); its
  rate is the engine's logged ``images_per_s`` after the warm-up window;
- ``reference``: the loop most code bases write: ``torchvision.datasets.ImageFolder`` with every
  view made image by image by torchvision transforms on PIL images in the workers (its crop box
  and flip recorded, which PixPro and DenseCL read), contiguous tensors, one forward per view
  (each view its own run of :class:`ViewStack`, so BatchNorm sees one view at a time), the same
  :class:`Method` module, optimiser (the engine's, which only favours the reference) and
  post-step updates, under the same ``torch.autocast``.

Each method runs ``--rounds`` back-to-back pairs; it prints the medians of both rates and of the
pairs' ratios (a load that comes and goes hits a pair together), and every pair's ratio. When the
data is missing it says so and exits 0.

Run from the repository root::

    python benchmarks/method_throughput.py [--methods simclr byol] [--steps 12] [--json]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torchvision import datasets
from torchvision import transforms as T
from torchvision.transforms import functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "imagenette_64" / "train"
if importlib.util.find_spec("sslvision") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from simclr_throughput import Measurement, measure_sslvision, reference_loader  # noqa: E402

from sslvision.augment.views import Views, ViewStack  # noqa: E402
from sslvision.config import Config, load_config  # noqa: E402
from sslvision.config.views import ViewGroup  # noqa: E402
from sslvision.engine.optim import build_optimizer  # noqa: E402
from sslvision.engine.trainer import resolve_views  # noqa: E402
from sslvision.methods.base import Progress  # noqa: E402
from sslvision.methods.registry import build_method  # noqa: E402

METHODS = ("simclr", "mocov2", "mocov3", "byol", "swav", "densecl", "pixpro")
AUTOCAST = {"bf16": torch.bfloat16}


class ReferenceViews:
    """Every view of a recipe from one PIL image, torchvision's way, with its box and flip."""

    def __init__(
        self,
        groups: Sequence[ViewGroup],
        load_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.groups, self.load_size = list(groups), load_size
        self.colour = [
            T.Compose(
                [
                    T.RandomApply(
                        [T.ColorJitter(g.brightness, g.contrast, g.saturation, g.hue)], g.jitter_p
                    ),
                    T.RandomGrayscale(g.grayscale_p),
                    T.RandomApply([T.GaussianBlur(g.blur_kernel_size, g.blur_sigma)], g.blur_p),
                    T.RandomSolarize(128, g.solarize_p),
                    T.ToTensor(),
                    T.Normalize(mean, std),
                ]
            )
            for g in self.groups
        ]

    def __call__(self, image: Image.Image) -> tuple[list[Tensor], list[Tensor], list[bool]]:
        # data.crop=squash, as the Imagenette recipes: the whole image to a square first
        image = image.convert("RGB").resize((self.load_size,) * 2, Image.BILINEAR)
        views, boxes, flips = [], [], []
        for group, colour in zip(self.groups, self.colour, strict=True):
            for _ in range(group.count):
                top, left, height, width = T.RandomResizedCrop.get_params(
                    image, list(group.scale), list(group.ratio)
                )
                view = F.resized_crop(image, top, left, height, width, [group.size] * 2)
                flip = bool(torch.rand(()) < group.hflip_p)
                views.append(colour(F.hflip(view) if flip else view))
                boxes.append(
                    torch.tensor([left, top, left + width, top + height], dtype=torch.float32)
                )
                flips.append(flip)
        return views, boxes, flips


def _collate(samples: list[tuple[tuple[list[Tensor], list[Tensor], list[bool]], int]]) -> tuple:
    views = [torch.stack(v) for v in zip(*(s[0][0] for s in samples), strict=True)]
    boxes = [torch.stack(b) for b in zip(*(s[0][1] for s in samples), strict=True)]
    flips = [torch.tensor(f) for f in zip(*(s[0][2] for s in samples), strict=True)]
    return views, boxes, flips


def measure_reference(cfg: Config, warmup_steps: int, steps: int) -> Measurement:
    """The conventional loop over ``cfg``'s method, one forward per view."""
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    groups = cfg.augment.views
    transform = ReferenceViews(groups, cfg.data.image_size, cfg.augment.mean, cfg.augment.std)
    dataset = datasets.ImageFolder(cfg.data.path, transform=transform)
    loader = reference_loader(cfg, dataset, device, _collate)
    method = build_method(cfg).to(device)
    optimizer = build_optimizer(method, cfg.optim, cfg.train.batch_size)
    dtype = AUTOCAST.get(cfg.train.precision)
    global_count = sum(g.count for g in groups if g.is_global)
    ones = [1] * sum(g.count for g in groups)
    batches = iter(loader)
    start = 0.0
    for step in range(warmup_steps + steps):
        if step == warmup_steps:
            _synchronize(device)
            start = time.perf_counter()
        images, boxes, flips = next(batches)
        views = Views(
            ViewStack([v.to(device, non_blocking=True) for v in images], ones),
            ViewStack([b.to(device) for b in boxes], ones),
            ViewStack([f.to(device) for f in flips], ones),
            global_count,
        )
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = method(views)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        method.on_after_backward()
        optimizer.step()
        method.on_step_end(Progress(step + 1, warmup_steps + steps, 0))
    _synchronize(device)
    return Measurement("reference", steps * cfg.train.batch_size, time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def method_config(method: str, args: argparse.Namespace, output_dir: str) -> Config:
    overrides = [
        f"data.path={args.data}",
        f"data.num_workers={args.workers}",
        f"output_dir={output_dir}",
        f"name={method}-throughput",
        f"train.batch_size={args.batch_size}",
        f"train.max_steps={args.warmup_steps + args.steps}",
        f"train.log_every={args.warmup_steps}",  # the first logged window is the warm-up
        f"train.precision={args.precision}",
        "train.progress_bar=false",
        "checkpoint.keep_every_epochs=0",
    ]
    cfg = load_config(REPO_ROOT / "configs" / method / "imagenette.yaml", overrides)
    cfg.augment.views = resolve_views(cfg)
    return cfg


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageFolder split dir")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--steps", type=int, default=12, help="timed optimiser steps")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--precision", choices=("no", "bf16"), default="bf16", help="both loops")
    parser.add_argument("--rounds", type=int, default=3, help="back-to-back pairs; medians")
    parser.add_argument("--json", action="store_true", help="also print one JSON record last")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.is_dir():
        print(
            f"skipping: data folder {args.data} not found (pass --data, e.g. imagenette_64/train)"
        )
        return 0
    print(
        f"method throughput, Imagenette-64 recipes, batch {args.batch_size}, {args.workers} "
        f"workers, {args.precision}, {args.steps} timed steps after {args.warmup_steps}, "
        f"{args.rounds} rounds; images/s (medians)"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="method_throughput_") as output_dir:
        for method in args.methods:
            pairs = []  # (sslvision, reference), measured back to back each round
            for round_ in range(args.rounds):
                cfg = method_config(method, args, f"{output_dir}/round{round_}")
                ours = measure_sslvision(cfg).images_per_s
                gc.collect()  # the engine's workers exit before the reference starts its own
                pairs.append(
                    (ours, measure_reference(cfg, args.warmup_steps, args.steps).images_per_s)
                )
                gc.collect()
            ours = statistics.median(p[0] for p in pairs)
            theirs = statistics.median(p[1] for p in pairs)
            ratio = statistics.median(p[0] / p[1] for p in pairs)
            row = {"method": method, "sslvision": round(ours, 1), "reference": round(theirs, 1)}
            row |= {"ratio": round(ratio, 3), "round_ratios": [round(a / b, 3) for a, b in pairs]}
            rows.append(row)
            rounds = ", ".join(f"{r:.2f}" for r in row["round_ratios"])
            print(
                f"  {method:>8}: sslvision {ours:7.1f}  reference {theirs:7.1f}  "
                f"{ratio:5.2f}x (rounds: {rounds})",
                flush=True,
            )
    if args.json:
        print(json.dumps({"precision": args.precision, "methods": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
