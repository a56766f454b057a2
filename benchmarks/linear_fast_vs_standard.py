"""The fast linear protocol against standard runs, in one process on the same data and encoder.

- ``fast``: extract the features of train and val once (into a fresh cache), then train a sweep
  of N heads together on the cached features and evaluate the chosen one;
- ``standard``: N runs of one head each (the N learning rates of the sweep), each passing every
  augmented batch through the frozen backbone, as a protocol without a cache must.

Both train for the same epochs with the same batch size, and both choose on the held-out slice.
The ratio standard / fast is the headline figure; it grows with the epochs (the fast protocol's
extraction is paid once, a standard run pays a backbone pass per epoch). Run from the
repository root::

    python benchmarks/linear_fast_vs_standard.py [--heads 8] [--epochs 2] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "imagenette_64"
if importlib.util.find_spec("sslvision") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from sslvision.eval.encoders import load_encoder  # noqa: E402
from sslvision.eval.linear_eval import run_linear  # noqa: E402
from sslvision.eval.linear_protocols import get_protocol  # noqa: E402


def learning_rates(count: int) -> list[float]:
    """``count`` base learning rates spread over the sweep's decades."""
    return [round(10 ** (-3 + 4 * i / max(1, count - 1)), 6) for i in range(count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="a folder with train/ and val/")
    parser.add_argument("--encoder", default="random", help="as `sslvision linear` takes it")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--heads", type=int, default=8, help="N: heads of the sweep, runs")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON record last")
    args = parser.parse_args(argv)
    data = Path(args.data)
    if not (data / "train").is_dir():
        print(f"benchmark skipped: no data at {data} (../shared/data next to the repository)")
        return 0
    train, val = str(data / "train"), str(data / "val")
    lrs = learning_rates(args.heads)
    common = [f"epochs={args.epochs}", f"batch_size={args.batch_size}", "lr_scaling=none"]
    options = {"num_workers": args.workers, "progress": False}

    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        fast = run_linear(
            load_encoder(args.encoder, image_size=args.image_size),
            train,
            val,
            protocol=get_protocol(
                "fast",
                [
                    *common,
                    f"sweep_lrs={lrs}",
                    "sweep_weight_decays=[0]",
                    "sweep_batch_norm=[false]",
                ],
            ),
            run_dir=Path(scratch) / "fast",
            sweep=True,
            cache_dir=Path(scratch) / "cache",
            **options,
        )
        fast_seconds = time.perf_counter() - started
        started = time.perf_counter()
        standard = [
            run_linear(
                load_encoder(args.encoder, image_size=args.image_size),
                train,
                val,
                protocol=get_protocol("mocov3-small", [*common, f"lr={lr}"]),
                run_dir=Path(scratch) / f"standard{index}",
                **options,
            )
            for index, lr in enumerate(lrs)
        ]
        standard_seconds = time.perf_counter() - started

    ratio = standard_seconds / fast_seconds
    standard_top1 = [record["linear_top1"] for record in standard]
    print(f"{args.heads} heads, {args.epochs} epochs, batch {args.batch_size}, {args.encoder}")
    print(f"fast (extract once + sweep of {args.heads}): {fast_seconds:8.1f} s")
    print(f"standard ({args.heads} runs of one head):     {standard_seconds:8.1f} s")
    print(f"ratio standard / fast: {ratio:.1f}x")
    print(
        f"val top-1: fast {100 * fast['linear_top1']:.2f}% (head {fast['linear_head']}, chosen "
        f"on held-out train); the standard runs (augmented, one learning rate each): "
        f"{100 * min(standard_top1):.2f}-{100 * max(standard_top1):.2f}%"
    )
    if args.json:
        record = {
            "heads": args.heads,
            "epochs": args.epochs,
            "fast_seconds": round(fast_seconds, 2),
            "standard_seconds": round(standard_seconds, 2),
            "ratio": round(ratio, 2),
            "fast_top1": fast["linear_top1"],
            "standard_top1": standard_top1,
        }
        print(json.dumps(record, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
