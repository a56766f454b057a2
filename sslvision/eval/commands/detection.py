"""``sslvision detect``: the command line of detection transfer (``sslvision.eval.detection``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sslvision.eval.commands.argtypes import int_at_least, positive_float
from sslvision.eval.evaluator import Evaluator
from sslvision.registry import EVALUATORS


@EVALUATORS.register("detect")
class DetectionEvaluator(Evaluator):
    help = "detection transfer: fine-tune Faster R-CNN + FPN on the backbone, report AP50"
    description = (
        "Fine-tune a Faster R-CNN with FPN on the encoder's ResNet and "
        "report COCO-protocol AP50 and AP. Example: sslvision detect "
        "runs/densecl-imagenette64/checkpoints/last.pt --voc /data/det_fruits --steps 1000"
    )
    metric_prefix = "ap"  # ap50 and ap

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        p = parser
        p.add_argument("encoder", help="checkpoint path | random | torchvision weight name")
        p.add_argument(
            "--voc", default="", help="a VOC-layout root (Annotations/, ImageSets/Main/)"
        )
        p.add_argument("--train-split", default="train", help="VOC split to train on")
        p.add_argument("--val-split", default="test", help="VOC split to evaluate on")
        p.add_argument("--coco-train", default="", help="COCO detection JSON to train on")
        p.add_argument("--coco-val", default="", help="COCO detection JSON to evaluate on")
        p.add_argument(
            "--image-root", default="", help="COCO file_name base; empty: the train JSON's folder"
        )
        p.add_argument("--steps", type=int_at_least(1), default=1000, help="fine-tuning steps")
        p.add_argument("--batch-size", type=int_at_least(1), default=4, help="images a step")
        p.add_argument(
            "--lr",
            type=positive_float,
            default=0.005,
            help="peak SGD learning rate (0.02 per 16 images)",
        )
        p.add_argument("--norm", default="batch", choices=("batch", "frozen"), help="backbone BN")
        p.add_argument(
            "--min-size",
            type=int_at_least(1),
            default=320,
            help="shorter image side for the detector",
        )
        p.add_argument(
            "--max-size", type=int_at_least(1), default=512, help="longer image side at most"
        )
        p.add_argument(
            "--trainable-layers",
            type=int,
            choices=range(6),
            default=3,
            help="ResNet stages fine-tuned",
        )
        p.add_argument("--seed", type=int, default=0, help="seed of the heads' init and the order")

    @staticmethod
    def run(args: argparse.Namespace) -> dict[str, Any]:
        from sslvision.data.detection import coco_detection, voc_detection
        from sslvision.errors import ConfigError
        from sslvision.eval.detection import run_detection
        from sslvision.eval.encoders import load_encoder

        if args.voc:
            train_set = voc_detection(args.voc, args.train_split)
            val_set = voc_detection(args.voc, args.val_split, classes=train_set.classes)
        elif args.coco_train and args.coco_val:
            root = args.image_root or str(Path(args.coco_train).resolve().parent)
            train_set = coco_detection(args.coco_train, root)
            val_set = coco_detection(args.coco_val, root, classes=train_set.classes)
        else:
            raise ConfigError("give --voc ROOT, or both --coco-train and --coco-val")
        encoder = load_encoder(args.encoder, backbone=args.backbone, small_stem=args.small_stem)
        record = run_detection(
            encoder,
            train_set,
            val_set,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            min_size=args.min_size,
            max_size=args.max_size,
            trainable_layers=args.trainable_layers,
            norm=args.norm,
            num_workers=args.num_workers,
            seed=args.seed,
        )
        print(
            f"detection: AP50 {100 * record['ap50']:.2f}  AP {100 * record['ap']:.2f}  "
            f"({args.encoder}, {record['steps']} steps on {record['num_train']} images)"
        )
        return record
