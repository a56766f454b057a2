"""``sslvision knn``: the command line of the weighted kNN evaluator, ``eval.knn_eval``."""

from __future__ import annotations

import argparse
from typing import Any

from sslvision.eval.commands.argtypes import int_at_least, positive_float
from sslvision.eval.commands.cache_flags import add_cache_flags, cache_dir_of
from sslvision.eval.evaluator import Evaluator
from sslvision.registry import EVALUATORS


@EVALUATORS.register("knn")
class KNNEvaluator(Evaluator):
    help = "weighted kNN evaluation (DINO / InstDisc protocol)"
    description = (
        "kNN-evaluate an encoder: a checkpoint path, 'random', a torchvision weight "
        "name (ResNet18_Weights.IMAGENET1K_V1) or timm:<model>.<tag>. Data: an ImageFolder split "
        "directory, 'synthetic' (the embedded default) or cifar10:ROOT / cifar100:ROOT."
    )
    metric_prefix = "knn_top1"  # top-5 is in the record too, but not a headline metric

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("encoder", help="checkpoint path | random | weight name")
        parser.add_argument("--train-data", required=True, help="the memory bank's images")
        parser.add_argument("--val-data", required=True, help="the images to classify")
        parser.add_argument(
            "--k", type=int_at_least(1), nargs="+", default=[20, 200], help="neighbour counts"
        )
        parser.add_argument(
            "--temperature", type=positive_float, default=0.07, help="vote weight exp(sim / T)"
        )
        parser.add_argument(
            "--image-size",
            type=int_at_least(1),
            default=None,
            help="load size; None: the checkpoint's, else 32",
        )
        parser.add_argument(
            "--seed", type=int, default=0, help="seed of the 'random' encoder's init"
        )
        parser.add_argument(
            "--batch-size", type=int_at_least(1), default=256, help="images a batch"
        )
        add_cache_flags(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> dict[str, Any]:
        from sslvision.eval.encoders import load_encoder
        from sslvision.eval.knn_eval import run_knn

        encoder = load_encoder(
            args.encoder,
            backbone=args.backbone,
            small_stem=args.small_stem,
            image_size=args.image_size,
            seed=args.seed,
        )
        record = run_knn(
            encoder,
            args.train_data,
            args.val_data,
            ks=args.k,
            temperature=args.temperature,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            cache_dir=cache_dir_of(args),
        )
        for k in args.k:
            print(
                f"kNN k={k}: top-1 {100 * record[f'knn_top1_k{k}']:.2f}%  "
                f"top-5 {100 * record[f'knn_top5_k{k}']:.2f}%  ({args.encoder})"
            )
        return record
