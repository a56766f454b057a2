"""``sslvision linear``: the command line of the linear-probe evaluator, ``eval.linear_eval``."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from sslvision.eval.commands.argtypes import int_at_least
from sslvision.eval.commands.cache_flags import add_cache_flags, cache_dir_of
from sslvision.eval.evaluator import Evaluator
from sslvision.registry import EVALUATORS

# Kept in sync with eval.linear_protocols.PRESETS by a test: this module imports no torch.
PROTOCOLS = (
    "mocov2",
    "mocov3",
    "simclr",
    "mae",
    "mocov2-small",
    "mocov3-small",
    "simclr-small",
    "mae-small",
    "fast",
)


def add_encoder_and_data(parser: argparse.ArgumentParser) -> None:
    """The positional encoder and the two splits, as every feature evaluator takes them."""
    parser.add_argument("encoder", help="checkpoint path | exported backbone | random | weights")
    parser.add_argument("--train-data", required=True, help="the split the classifier learns on")
    parser.add_argument("--val-data", required=True, help="the split it is evaluated on, once")
    parser.add_argument(
        "--image-size",
        type=int_at_least(1),
        default=None,
        help="load size; None: the protocol's, else the checkpoint's, else 32",
    )
    parser.add_argument("--seed", type=int, default=0, help="random encoder init, held-out draw")


def add_selection(parser: argparse.ArgumentParser) -> None:
    """Where hyperparameters are chosen: a held-out slice of train (never val, by default)."""
    parser.add_argument(
        "--select-on",
        choices=("heldout", "val"),
        default="heldout",
        help="heldout: choose on a slice of train, then read val once; val: as some papers did "
        "(optimistic; the record says so)",
    )
    parser.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.1,
        help="share of each training class held out for the choice",
    )


def load_cli_encoder(args: argparse.Namespace) -> Any:
    """The encoder the shared flags describe (imports torch: call from ``run``)."""
    from sslvision.eval.encoders import load_encoder

    return load_encoder(
        args.encoder,
        backbone=args.backbone,
        small_stem=args.small_stem,
        image_size=args.image_size,
        seed=args.seed,
    )


@EVALUATORS.register("linear")
class LinearEvaluator(Evaluator):
    help = "linear probe: the papers' protocols, head sweeps, held-out selection"
    description = (
        "Train a linear classifier on a frozen encoder (a checkpoint, an exported backbone, "
        "'random' or published weights) and evaluate it on val once. Protocols: the papers' "
        "ImageNet recipes (mocov2, mocov3, simclr, mae), their '-small' versions for small data "
        "and images, and 'fast' (cached features, no augmentation). Examples: sslvision linear "
        "runs/simclr-demo/checkpoints/last.pt --train-data synthetic --val-data synthetic "
        "--protocol fast --sweep;  ... --protocol mocov2-small --set epochs=30 batch_size=128"
    )
    metric_prefix = "linear_top1"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_encoder_and_data(parser)
        parser.add_argument("--protocol", choices=PROTOCOLS, default="fast", help="the recipe")
        parser.add_argument(
            "--set",
            nargs="+",
            default=[],
            metavar="KEY=VALUE",
            help="override protocol settings, e.g. epochs=30 lr=0.5 augment=false",
        )
        parser.add_argument(
            "--sweep",
            action="store_true",
            help="train the grid of learning rates x weight decays x BN heads in one pass",
        )
        add_selection(parser)
        parser.add_argument(
            "--run-dir",
            default="",
            help="checkpoints and metrics.csv; empty: runs/linear/<encoder>-<protocol>",
        )
        parser.add_argument(
            "--resume", default=None, help="'auto': continue the run in --run-dir if any"
        )
        parser.add_argument(
            "--overwrite", action="store_true", help="start afresh in a --run-dir that has a run"
        )
        add_cache_flags(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> dict[str, Any]:
        from sslvision.eval.linear_eval import run_linear
        from sslvision.eval.linear_protocols import get_protocol

        protocol = get_protocol(args.protocol, args.set)
        record = run_linear(
            load_cli_encoder(args),
            args.train_data,
            args.val_data,
            protocol=protocol,
            run_dir=args.run_dir or default_run_dir(args.encoder, protocol.name, args.sweep),
            sweep=args.sweep,
            select_on=args.select_on,
            holdout_fraction=args.holdout_fraction,
            seed=args.seed,
            resume=args.resume,
            overwrite=args.overwrite,
            cache_dir=cache_dir_of(args),
            num_workers=args.num_workers,
        )
        if record["status"] != "finished":
            print(f"linear probe {record['status']} at step {record['steps']}: {record['run_dir']}")
            return record
        print(
            f"linear ({protocol.name}, head {record['linear_head']}, selected on "
            f"{args.select_on}): top-1 {100 * record['linear_top1']:.2f}%  "
            f"top-5 {100 * record['linear_top5']:.2f}%  ({args.encoder})"
        )
        return record


def default_run_dir(encoder: str, protocol: str, sweep: bool) -> Path:
    """``runs/linear/<encoder as a name>-<protocol>[-sweep]``."""
    name = re.sub(r"[^A-Za-z0-9_.]+", "-", encoder).strip("-.")[-80:]
    return Path("runs") / "linear" / f"{name}-{protocol}{'-sweep' if sweep else ''}"
