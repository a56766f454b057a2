"""Input-path throughput: crops from the original image (``data.crop=original``) against crops
from the image squashed to a square first (``data.crop=squash``), and decoding on the training
device (``data.decode=device``) against decoding in the workers, side by side in one run.

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
- ``device``: the workers only read the files' bytes; ``--device`` decodes the batch in one call
  and cuts the crops (nvJPEG on a GPU; on a CPU this is the training process decoding alone,
  which the workers do faster, so it is there to be measured, not used).

Run from the repository root::

    python benchmarks/input_path.py [--view-size 224] [--batches 12] [--device cuda] [--json]
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_profile import synchronize  # noqa: E402

from sslvision.augment.pipeline import ViewPipeline  # noqa: E402
from sslvision.augment.recipes import simclr_views  # noqa: E402
from sslvision.config import config_from_dict  # noqa: E402
from sslvision.engine.trainer import training_data, views_of_batch  # noqa: E402

PATHS = {"squash": ("squash", "workers"), "original": ("original", "workers")}
PATHS["device"] = ("original", "device")


def _photo_folder(photos: Path, into: Path) -> Path:
    """An ImageFolder root with one class folder of links to ``photos``' JPEGs."""
    folder = into / "photos"
    folder.mkdir()
    for photo in sorted(photos.glob("*.jpg")):
        (folder / photo.name).symlink_to(photo.resolve())
    return into


def measure(path: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Images a second through the engine's loader and view pipeline for one of :data:`PATHS`."""
    crop, decode = PATHS[path]
    device = torch.device(args.device)
    cfg = config_from_dict(
        {
            "data": {
                "dataset": "folder",
                "path": str(root),
                "image_size": args.load_size,
                "crop": crop,
                "decode": decode,
                "num_workers": args.workers,
            },
            "augment": {"views": [vars(group) for group in simclr_views(args.view_size)]},
            "train": {"batch_size": args.batch_size},
        }
    )
    sampler, loader = training_data(cfg, rank=0, world=1, pin=device.type == "cuda")
    sampler.set_epoch(0)
    pipeline = ViewPipeline(cfg.augment.views, cfg.augment.mean, cfg.augment.std).to(device)
    batches = iter(loader)
    for _ in range(args.warmup_batches):
        views_of_batch(pipeline, next(batches), device)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(args.batches):
        views_of_batch(pipeline, next(batches), device)
    synchronize(device)
    seconds = time.perf_counter() - started
    images = args.batches * args.batch_size
    return {"path": path, "images_per_s": round(images / seconds, 1), "seconds": round(seconds, 2)}


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
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
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
        rounds = [[measure(path, root, args) for path in PATHS] for _ in range(args.rounds)]
    rates = {
        path: statistics.median(r[i]["images_per_s"] for r in rounds)
        for i, path in enumerate(PATHS)
    }
    ratios = {
        "original_to_squash": rates["original"] / rates["squash"],
        "device_to_original": rates["device"] / rates["original"],
    }
    print(
        f"input path, SimCLR views at {args.view_size} px, batch {args.batch_size}, "
        f"{args.workers} workers, {torch.get_num_threads()} threads, device {args.device}"
    )
    for path, rate in rates.items():
        crop, decode = PATHS[path]
        print(f"  {path:>8} (crop {crop}, decode {decode}): {rate:8.1f} images/s (median)")
    for name, ratio in ratios.items():
        print(f"  {name.replace('_to_', ' / ')}: {ratio:.2f}x")
    if args.json:
        record = {"device": args.device, "images_per_s": rates}
        record["ratios"] = {name: round(ratio, 3) for name, ratio in ratios.items()}
        print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
