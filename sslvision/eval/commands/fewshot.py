"""``sslvision fewshot``: kNN and logistic regression on a few labels a class."""

from __future__ import annotations

import argparse
from typing import Any

from sslvision.eval.commands.argtypes import int_at_least
from sslvision.eval.commands.cache_flags import add_cache_flags, cache_dir_of
from sslvision.eval.commands.linear import add_encoder_and_data, load_cli_encoder
from sslvision.eval.evaluator import Evaluator
from sslvision.registry import EVALUATORS


@EVALUATORS.register("fewshot")
class FewShotEvaluator(Evaluator):
    help = "few-shot kNN and logistic regression (1/2/5/10 labels a class, several draws)"
    description = (
        "Draw N labelled training images per class (several seeded draws), fit kNN and "
        "logistic regression on their cached features with k and C chosen on a held-out slice "
        "of the training split, and report val accuracy as mean and standard deviation."
    )
    metric_prefix = ("fewshot_knn_top1", "fewshot_logreg_top1")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_encoder_and_data(parser)
        parser.add_argument(
            "--shots", type=int_at_least(1), nargs="+", default=[1, 2, 5, 10], help="N per class"
        )
        parser.add_argument("--draws", type=int_at_least(1), default=5, help="draws per N")
        parser.add_argument(
            "--holdout-fraction",
            type=float,
            default=0.1,
            help="share of each training class held out to choose k and C (never drawn)",
        )
        add_cache_flags(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> dict[str, Any]:
        from sslvision.eval.cached_evals import run_fewshot

        record = run_fewshot(
            load_cli_encoder(args),
            args.train_data,
            args.val_data,
            shots=args.shots,
            draws=args.draws,
            holdout_fraction=args.holdout_fraction,
            seed=args.seed,
            cache_dir=cache_dir_of(args),
            num_workers=args.num_workers,
        )
        for n in args.shots:
            knn, logreg = (f"fewshot_{kind}_top1_{n}shot" for kind in ("knn", "logreg"))
            knn_text = f"{100 * record[knn + '_mean']:.2f} ± {100 * record[knn + '_std']:.2f}%"
            logreg_text = (
                f"{100 * record[logreg + '_mean']:.2f} ± {100 * record[logreg + '_std']:.2f}%"
            )
            print(
                f"{n}-shot: kNN {knn_text}  log-reg {logreg_text}  "
                f"({args.draws} draws, {args.encoder})"
            )
        return record
