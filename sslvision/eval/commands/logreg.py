"""``sslvision logreg``: logistic regression on cached features, ``eval.cached_evals``."""

from __future__ import annotations

import argparse
from typing import Any

from sslvision.eval.commands.argtypes import positive_float
from sslvision.eval.commands.cache_flags import add_cache_flags, cache_dir_of
from sslvision.eval.commands.linear import add_encoder_and_data, add_selection, load_cli_encoder
from sslvision.eval.evaluator import Evaluator
from sslvision.registry import EVALUATORS


@EVALUATORS.register("logreg")
class LogRegEvaluator(Evaluator):
    help = "logistic regression (L-BFGS) on cached features, C chosen on held-out train"
    description = (
        "Fit multinomial logistic regression (scikit-learn, L-BFGS) on an encoder's frozen, "
        "standardised features for each C of a grid, choose C on a held-out slice of the "
        "training split, refit on all of it and evaluate on val once. Features come from the "
        "cache that knn and 'linear --protocol fast' share."
    )
    metric_prefix = "logreg_top1"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_encoder_and_data(parser)
        parser.add_argument(
            "--c",
            type=positive_float,
            nargs="+",
            default=None,
            help="inverse regularisation strengths to choose from; default: a log grid",
        )
        add_selection(parser)
        add_cache_flags(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> dict[str, Any]:
        from sslvision.eval.cached_evals import run_logreg
        from sslvision.eval.logreg import DEFAULT_CS

        record = run_logreg(
            load_cli_encoder(args),
            args.train_data,
            args.val_data,
            cs=args.c or DEFAULT_CS,
            select_on=args.select_on,
            holdout_fraction=args.holdout_fraction,
            seed=args.seed,
            cache_dir=cache_dir_of(args),
            num_workers=args.num_workers,
        )
        print(
            f"logistic regression (C={record['logreg_c']:g}, selected on {args.select_on}): "
            f"top-1 {100 * record['logreg_top1']:.2f}%  top-5 {100 * record['logreg_top5']:.2f}%"
            f"  ({args.encoder})"
        )
        return record
