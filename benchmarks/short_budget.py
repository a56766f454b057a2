"""Short-budget study: the real-data tests' budget for many methods, settings and seeds in one run.

The real-data tests (``tests/test_real_imagenette.py``) pretrain each method for 150 steps of 128
on Imagenette-64 and ask whether the kNN top-1 (k = 20) beats the zero-LR control's (the same run
at ``optim.base_lr=0``: a grid line ``LABEL METHOD optim.base_lr=0``) by ``MARGIN``. At
that budget one seed says little (seeds differ by up to 0.03), so this script runs a grid of
settings x seeds as parallel processes (a few dozen runs take minutes on one GPU) and prints each
setting's mean, min and max next to the random init, with how many seeds pass the test's margin.
The budget is defined here once; the real-data tests import it.

Run from the repository root::

    python benchmarks/short_budget.py --grid benchmarks/short_budget_grid.txt --seeds 0 1 2 --jobs 8

A grid line is ``LABEL METHOD [OVERRIDE ...]``, with ``sslvision pretrain``'s dotted overrides
(``mocov3-T0.1 mocov3 method.temperature=0.1``); ``#`` starts a comment. Every run appends one
row to ``--csv``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "imagenette_64"
if importlib.util.find_spec("sslvision") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from sslvision.config import load_config  # noqa: E402
from sslvision.errors import ConfigError  # noqa: E402
from sslvision.eval.results import append_result  # noqa: E402

# 150 steps of 128 (two epochs of Imagenette's 9,469 images) on a 3-epoch schedule, 2.5-4.5 minutes
# a method on 2 cores under bf16. The recipes' 2-epoch warm-up stays, so the run is nearly all
# warm-up: a 0.2-epoch warm-up and the cosine decay after it cost SimCLR 0.04 and MoCo v3 0.02.
# At 32 px a ResNet-18's last map is 1x1 and no short run beat the random init.
STEPS = 150
EPOCHS = 3
# A pretrained kNN top-1 passes when above its zero-LR control's + MARGIN: about 1.4 times the
# sampling error of a top-1 on Imagenette's 3,925 val images (0.007); the method and its control
# share the seed, so the init's seed-to-seed spread (0.02-0.03 for the controls) cancels.
MARGIN = 0.01
KNN_K = 20
# SwAV's prototypes stay frozen for 20 of the 150 steps: the recipe's first epoch would be half.
METHOD_BUDGET = {"swav": ["method.freeze_prototypes_steps=20"]}
RECORD_PREFIX = "SHORT_BUDGET_RECORD "


def default_precision() -> str:
    """bf16 autocast on a GPU or a CPU with native bf16 (AVX512-BF16, AMX); else float32."""
    if torch.cuda.is_available():
        return "bf16"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16" if native else "no"


def budget_overrides(
    method: str, train_dir: str | Path, precision: str, steps: int = STEPS, epochs: int = EPOCHS
) -> list[str]:
    """The overrides that turn ``configs/<method>/imagenette.yaml`` into the short-budget run."""
    return [
        f"data.path={train_dir}",
        f"train.max_steps={steps}",
        f"train.epochs={epochs}",
        "train.progress_bar=false",
        "checkpoint.keep_every_epochs=0",
        f"train.precision={precision}",
        *METHOD_BUDGET.get(method, []),
    ]


@dataclass
class Trial:
    """One run: a grid line at one seed."""

    label: str
    method: str
    seed: int
    overrides: list[str] = field(default_factory=list)


def read_grid(path: Path) -> list[tuple[str, str, list[str]]]:
    """The (label, method, overrides) of each line of a grid file."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) < 2:
            raise SystemExit(f"{path}:{number}: a grid line is LABEL METHOD [OVERRIDE ...]")
        rows.append((words[0], words[1], words[2:]))
    return rows


def recipe(method: str) -> Path:
    return REPO_ROOT / "configs" / method / "imagenette.yaml"


def trial_overrides(trial: Trial, data: Path, args: argparse.Namespace) -> list[str]:
    budget = budget_overrides(trial.method, data / "train", args.precision, args.steps, args.epochs)
    return [*budget, f"seed={trial.seed}", *trial.overrides]


def check_grid(trials: Sequence[Trial], data: Path, args: argparse.Namespace) -> None:
    """Load every trial's config before any run starts, so a typo costs seconds, not the grid."""
    for trial in trials:
        if not recipe(trial.method).is_file():
            raise SystemExit(f"grid line {trial.label!r}: no recipe {recipe(trial.method)}")
        try:
            load_config(recipe(trial.method), trial_overrides(trial, data, args))
        except ConfigError as error:
            raise SystemExit(f"grid line {trial.label!r}: {error}") from None


def run_trial(trial: Trial, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Pretrain and evaluate ``trial`` in this process; the result record."""
    from sslvision.engine.trainer import train
    from sslvision.eval.encoders import load_encoder
    from sslvision.eval.knn_eval import run_knn

    knn_data = {"train_data": str(data / "train"), "val_data": str(data / "val"), "ks": (KNN_K,)}
    started = time.perf_counter()
    if trial.method == "random":
        record = run_knn(load_encoder("random", image_size=64), **knn_data)
        return {**record, "label": trial.label, "seed": 0}
    with tempfile.TemporaryDirectory() as output_dir:
        overrides = [*trial_overrides(trial, data, args), f"output_dir={output_dir}"]
        result = train(load_config(recipe(trial.method), overrides))
        train_seconds = time.perf_counter() - started
        record = run_knn(load_encoder(str(result.checkpoint)), **knn_data)
    losses = [row["loss"] for row in result.metrics if "loss" in row]
    return {
        **record,
        "label": trial.label,
        "seed": trial.seed,
        "overrides": " ".join(trial.overrides),
        "steps": result.step,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_seconds": round(train_seconds, 1),
    }


def run_in_subprocess(trial: Trial, argv: Sequence[str]) -> dict[str, Any]:
    """Run ``trial`` in a fresh Python process: runs share no state and use every core and GPU."""
    command = [sys.executable, __file__, *argv, "--trial", json.dumps(asdict(trial))]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(RECORD_PREFIX):
            return json.loads(line[len(RECORD_PREFIX) :])
    last_error = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"label": trial.label, "seed": trial.seed, "method": trial.method, "error": last_error}


def summarise(records: Sequence[dict[str, Any]], random_top1: float) -> pd.DataFrame:
    """Each label's kNN top-1 over its seeds, and how many seeds pass the real test's margin."""
    column = f"knn_top1_k{KNN_K}"
    table = pd.DataFrame([r for r in records if column in r])
    if table.empty:
        return table
    grouped = table.groupby("label", sort=False)[column]
    return pd.DataFrame(
        {
            "runs": grouped.size(),
            "mean": grouped.mean().round(4),
            "min": grouped.min().round(4),
            "max": grouped.max().round(4),
            "pass": grouped.apply(lambda top1: int((top1 > random_top1 + MARGIN).sum())),
        }
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grid", type=Path, help="the grid file: LABEL METHOD [OVERRIDE ...]")
    parser.add_argument("--labels", nargs="+", help="run only these grid lines (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of every line")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train/, val/")
    parser.add_argument(
        "--csv", type=Path, default=REPO_ROOT / "results" / "short_budget.csv", help="results table"
    )
    parser.add_argument("--steps", type=int, default=STEPS, help=f"steps a run (default {STEPS})")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="schedule length in epochs")
    parser.add_argument("--precision", default=default_precision(), choices=("no", "bf16", "fp16"))
    parser.add_argument("--trial", help=argparse.SUPPRESS)  # one run, in a child process
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "train").is_dir() or not (args.data / "val").is_dir():
        print(f"short_budget: no train/ and val/ under {args.data}; nothing to measure")
        return 0
    if args.trial:
        record = run_trial(Trial(**json.loads(args.trial)), args.data, args)
        print(RECORD_PREFIX + json.dumps(record, default=str), flush=True)
        return 0
    if args.grid is None:
        raise SystemExit("short_budget: --grid FILE is required")
    grid = read_grid(args.grid)
    unknown = sorted(set(args.labels or []) - {label for label, _, _ in grid})
    if unknown:
        raise SystemExit(f"short_budget: {args.grid} has no line {', '.join(unknown)}")
    trials = [
        Trial(label, method, seed, overrides)
        for label, method, overrides in grid
        if not args.labels or label in args.labels
        for seed in args.seeds
    ]
    check_grid(trials, args.data, args)
    child_argv = ["--data", str(args.data), "--steps", str(args.steps)]
    child_argv += ["--epochs", str(args.epochs), "--precision", args.precision]
    random_record = run_in_subprocess(Trial("random init", "random", 0), child_argv)
    if "error" in random_record:
        raise SystemExit(f"short_budget: the random-init kNN failed: {random_record['error']}")
    random_top1 = random_record[f"knn_top1_k{KNN_K}"]
    append_result(random_record, args.csv)
    print(f"random init: kNN top-1 {random_top1:.4f}; {len(trials)} runs, {args.jobs} at a time")
    records = []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_in_subprocess, trial, child_argv) for trial in trials]
        for future in as_completed(futures):
            record = future.result()
            append_result(record, args.csv)  # appends stay in this process, one at a time
            records.append(record)
            outcome = record.get("error") or f"kNN top-1 {record[f'knn_top1_k{KNN_K}']:.4f}"
            print(f"{record['label']} seed {record['seed']}: {outcome}", flush=True)
    print(f"\nkNN top-1 (k = {KNN_K}); random init {random_top1:.4f}, pass: above it + {MARGIN}")
    labels = list(dict.fromkeys(trial.label for trial in trials))  # in grid order
    records.sort(key=lambda record: (labels.index(record["label"]), record["seed"]))
    print(summarise(records, random_top1).to_string())
    failed = [r for r in records if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
