"""Augmentation throughput: sslvision's batched view pipeline against torchvision.transforms.v2
applied per sample in DataLoader workers, and the cost of each op, side by side in one run.

Three recipes, each at every ``--sizes`` view size (source images 8/7 of it, as 256 for 224):

- ``simclr``: SimCLR's two views;
- ``multicrop``: SwAV's 2 global views plus 6 local ones at 96/224 of the size;
- ``coordinate``: BYOL's asymmetric views, which PixPro and DenseCL-style recipes use with the
  crop boxes (sslvision records them for every recipe, so its cost is the same pipeline's).

``sslvision`` is :class:`ViewPipeline` on ``--device`` from a uint8 batch already there;
``torchvision`` is the same recipe as ``transforms.v2`` on each uint8 image in ``--workers``
DataLoader workers, collated into batches, as a conventional loop does. Both report views a
second (median of ``--rounds``), and ``sslvision`` also as it was before its own blur and CPU
chunks (kornia's ``RandomGaussianBlur``, a grouped convolution with per-sample kernels, and every
op on the whole batch). The per-op table times each op of the first recipe's first view group
alone on its whole batch, with the alternatives beside ours: kornia's blur, and kornia's
per-sample ``slice`` crops against the one ``grid_sample`` (``resample``) the pipeline uses.

Run from the repository root::

    python benchmarks/augment_throughput.py [--sizes 64 224] [--device cuda] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("sslvision") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import kornia.augmentation as K  # noqa: E402
from gpu_profile import synchronize  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

import sslvision.augment.pipeline as pipeline_module  # noqa: E402
from sslvision.augment.blur import RandomGaussianBlur  # noqa: E402
from sslvision.augment.pipeline import GroupAugment, ViewPipeline  # noqa: E402
from sslvision.augment.recipes import byol_views, simclr_views, swav_views  # noqa: E402
from sslvision.config.views import ViewGroup  # noqa: E402

RECIPES: dict[str, Callable[[int], list[ViewGroup]]] = {
    "simclr": simclr_views,
    "multicrop": swav_views,
    "coordinate": byol_views,
}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torchvision_view(group: ViewGroup) -> v2.Compose:
    """One view of ``group`` as torchvision.transforms.v2 on a uint8 (3, H, W) image."""
    size = (group.size, group.size)
    kernel = group.blur_kernel_size
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, group.scale, group.ratio, antialias=True),
            v2.RandomHorizontalFlip(group.hflip_p),
            v2.RandomApply(
                [v2.ColorJitter(group.brightness, group.contrast, group.saturation, group.hue)],
                p=group.jitter_p,
            ),
            v2.RandomGrayscale(group.grayscale_p),
            v2.RandomApply([v2.GaussianBlur(kernel, group.blur_sigma)], p=group.blur_p),
            v2.RandomSolarize(128, p=group.solarize_p),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )


class PerSampleViews(Dataset):
    """Every view of a recipe, made image by image from a pool of uint8 images."""

    def __init__(self, pool: torch.Tensor, groups: list[ViewGroup], length: int) -> None:
        self.pool, self.length = pool, length
        self.transforms = [torchvision_view(g) for g in groups for _ in range(g.count)]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        image = self.pool[index % len(self.pool)]
        return tuple(transform(image) for transform in self.transforms)


def _seconds(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def kornia_blur(group: ViewGroup) -> K.RandomGaussianBlur:
    """The blur sslvision used before its own: kornia's per-sample-kernel convolution."""
    return K.RandomGaussianBlur((group.blur_kernel_size,) * 2, group.blur_sigma, p=group.blur_p)


def with_kornia_blur(pipeline: ViewPipeline) -> ViewPipeline:
    """``pipeline`` with each of its blurs swapped for :func:`kornia_blur`."""
    for augment in pipeline.groups:
        for index, op in enumerate(augment.later_ops):
            if isinstance(op, RandomGaussianBlur):
                augment.later_ops[index] = kornia_blur(augment.group)
    return pipeline


@contextmanager
def whole_batches() -> Iterator[None]:
    """The CPU's chunking off: every op takes the whole batch, as before it existed."""
    chunk_pixels = pipeline_module.CPU_CHUNK_PIXELS
    pipeline_module.CPU_CHUNK_PIXELS = 2**62
    try:
        yield
    finally:
        pipeline_module.CPU_CHUNK_PIXELS = chunk_pixels


def sslvision_views_per_s(
    groups: list[ViewGroup], source: torch.Tensor, args: argparse.Namespace, before: bool = False
) -> float:
    """Views a second of the pipeline; ``before``: with kornia's blur and no CPU chunks."""
    pipeline = ViewPipeline(groups, MEAN, STD).to(source.device)
    views = sum(g.count for g in groups) * len(source)
    if not before:
        return views / _seconds(lambda: pipeline(source), source.device, args.rounds)
    pipeline = with_kornia_blur(pipeline)
    with whole_batches():
        return views / _seconds(lambda: pipeline(source), source.device, args.rounds)


def torchvision_views_per_s(
    groups: list[ViewGroup], pool: torch.Tensor, args: argparse.Namespace
) -> float:
    # The workers keep ``prefetch_factor`` (2) batches each in hand: those are drained untimed,
    # so the timed batches arrive at the rate the workers make them.
    drain = 2 * args.workers + 1
    batches = drain + args.rounds * args.batches
    data = PerSampleViews(pool, groups, length=batches * args.batch_size)
    batch_iter = iter(DataLoader(data, args.batch_size, num_workers=args.workers))
    for _ in range(drain):
        next(batch_iter)
    times = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        for _ in range(args.batches):
            next(batch_iter)
        times.append((time.perf_counter() - started) / args.batches)
    views = sum(g.count for g in groups) * args.batch_size
    return views / statistics.median(times)


def op_costs(group: ViewGroup, source: torch.Tensor, repeats: int) -> dict[str, float]:
    """Milliseconds of each op of ``group`` on the group's whole batch (no CPU chunks), and
    the ops it replaced."""
    device = source.device
    augment = GroupAugment(group).to(device)
    batch = source.float().div(255).repeat(group.count, 1, 1, 1)
    crop_params = augment.crop.forward_parameters(batch.shape)
    views = augment.crop(batch, params=crop_params)
    slice_crop = K.RandomResizedCrop((group.size,) * 2, group.scale, group.ratio)
    old_blur = kornia_blur(group)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    ops: dict[str, Callable[[], Any]] = {
        "crop (one grid_sample)": lambda: augment.crop(batch, params=crop_params),
        "crop, kornia per-sample slices": lambda: slice_crop(batch, params=crop_params),
        "flip": lambda: augment.flip(views),
        "colour jitter": lambda: [augment.jitter(v) for v in views.chunk(group.count)],
        "normalise": lambda: views.sub(mean).div_(std),
    }
    for op in augment.later_ops:
        ops[type(op).__name__] = lambda op=op: op(views)
    if group.blur_p > 0:
        ops["RandomGaussianBlur, kornia convolution"] = lambda: old_blur(views)
    return {name: round(1e3 * _seconds(fn, device, repeats), 2) for name, fn in ops.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=list(RECIPES))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=2, help="torchvision batches per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; medians")
    parser.add_argument("--workers", type=int, default=2, help="torchvision's DataLoader workers")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="also print one JSON record last")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(
        f"augmentation, batch {args.batch_size}, sslvision on {device}, torchvision per sample "
        f"in {args.workers} workers, {torch.get_num_threads()} threads; views/s (median)"
    )
    throughput, costs = [], []
    for size in args.sizes:
        source_size = round(size * 8 / 7)
        pool = torch.randint(0, 256, (args.batch_size, 3, source_size, source_size))
        pool = pool.to(torch.uint8)
        source = pool.to(device)
        for recipe in args.recipes:
            groups = RECIPES[recipe](size)
            ours = sslvision_views_per_s(groups, source, args)
            before = sslvision_views_per_s(groups, source, args, before=True)
            theirs = torchvision_views_per_s(groups, pool, args)
            row = {"recipe": recipe, "size": size, "sslvision": round(ours, 1)}
            row |= {"sslvision_before": round(before, 1), "torchvision": round(theirs, 1)}
            row |= {
                "ratio": round(ours / theirs, 2),
                "ratio_to_before": round(ours / before, 2),
            }
            throughput.append(row)
            print(
                f"  {recipe:>10} {size:4d} px: sslvision {ours:8.1f} (before {before:8.1f},"
                f" {ours / before:4.2f}x)  torchvision {theirs:8.1f}  {ours / theirs:5.2f}x",
                flush=True,
            )
            if recipe == args.recipes[0]:
                costs.append({"size": size, "ms": op_costs(groups[0], source, args.rounds)})
    for entry in costs:
        print(
            f"per-op ms, {args.recipes[0]}'s first group of {args.batch_size} images, "
            f"{entry['size']} px:"
        )
        for name, ms in entry["ms"].items():
            print(f"  {name:>40}: {ms:8.2f}")
    if args.json:
        print(json.dumps({"device": str(device), "throughput": throughput, "op_ms": costs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
