"""Input-path throughput: crops from the original image (``data.crop=original``) against crops
from the image squashed to a square first (``data.crop=squash``), side by side in one run.

Both paths read the same non-square photographs (``../shared/data/det_fruits/JPEGImages``,
longer side up to 512 px) through the engine's own dataset, sampler and DataLoader, and make
the same SimCLR views with the same :class:`ViewPipeline`; no model runs, so the number is
what the input path alone delivers (images a second, both views made). The two paths alternate
for ``--rounds`` rounds and each reports its median, so a load that comes and goes on a shared
machine hits both.

- ``squash``: the workers decode and resize each whole image to ``--load-size`` (uint8); the
  pipeline cuts RandomResizedCrop from that square on the device (kornia, float).
- ``original``: the workers decode and cut each view's crop from the original size, resized
  to the view size (uint8); the pipeline skips its crop.

Run from the repository root::

    python benchmarks/input_path.py [--view-size 224] [--batches 12] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = REPO_ROOT.parent / "shared" / "data" / "det_fruits" / "JPEGImages"
if importlib.util.find_spec("sslvision") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from sslvision.augment.pipeline import ViewPipeline  # noqa: E402
from sslvision.augment.recipes import simclr_views  # noqa: E402
from sslvision.config import config_from_dict  # noqa: E402
from sslvision.engine.trainer import training_data, views_of_batch  # noqa: E402

CROPS = ("squash", "original")


def _photo_folder(photos: Path, into: Path) -> Path:
    """An ImageFolder root with one class folder of links to ``photos``' JPEGs."""
    folder = into / "photos"
    folder.mkdir()
    for photo in sorted(photos.glob("*.jpg")):
        (folder / photo.name).symlink_to(photo.resolve())
    return into


def measure(crop: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Images a second through the engine's loader and view pipeline for one ``data.crop``."""
    cfg = config_from_dict(
        {
            "data": {
                "dataset": "folder",
                "path": str(root),
                "image_size": args.load_size,
                "crop": crop,
                "num_workers": args.workers,
            },
            "augment": {"views": [vars(group) for group in simclr_views(args.view_size)]},
            "train": {"batch_size": args.batch_size},
        }
    )
    sampler, loader = training_data(cfg, rank=0, world=1, pin=False)
    sampler.set_epoch(0)
    pipeline = ViewPipeline(cfg.augment.views, cfg.augment.mean, cfg.augment.std)
    device = torch.device("cpu")
    batches = iter(loader)
    for _ in range(args.warmup_batches):
        views_of_batch(pipeline, next(batches), device)
    started = time.perf_counter()
    for _ in range(args.batches):
        views_of_batch(pipeline, next(batches), device)
    seconds = time.perf_counter() - started
    images = args.batches * args.batch_size
    return {"crop": crop, "images_per_s": round(images / seconds, 1), "seconds": round(seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--view-size", type=int, default=224)
    parser.add_argument("--load-size", type=int, default=256, help="squash: the square size")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=16, help="timed batches per path")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians")
    parser.add_argument("--warmup-batches", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="also print one JSON record last")
    args = parser.parse_args(argv)
    if not args.photos.is_dir():
        print(f"no photographs at {args.photos} (../shared/data/det_fruits); nothing to measure")
        return 0
    needed = (args.warmup_batches + args.batches) * args.batch_size
    with tempfile.TemporaryDirectory() as scratch:
        root = _photo_folder(args.photos, Path(scratch))
        available = len(list((root / "photos").iterdir()))
        if needed > available:
            parser.error(f"{needed} images needed for one epoch, {available} photographs found")
        rounds = [[measure(crop, root, args) for crop in CROPS] for _ in range(args.rounds)]
    results = [
        {"crop": crop, "images_per_s": statistics.median(r[i]["images_per_s"] for r in rounds)}
        for i, crop in enumerate(CROPS)
    ]
    ratio = results[1]["images_per_s"] / results[0]["images_per_s"]
    print(
        f"input path, SimCLR views at {args.view_size} px, batch {args.batch_size}, "
        f"{args.workers} workers, {torch.get_num_threads()} threads"
    )
    for result in results:
        print(f"  {result['crop']:>8}: {result['images_per_s']:8.1f} images/s (median)")
    print(f"  original / squash: {ratio:.2f}x")
    if args.json:
        print(json.dumps({"results": results, "ratio_original_to_squash": round(ratio, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
