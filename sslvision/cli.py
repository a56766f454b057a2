"""``sslvision <command>``: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_RESULTS = "results/results.csv"
REPORT_COLUMNS = ["evaluator", "encoder", "method", "backbone", "val_data"]
# Every command's --help shows the defaults.
HELP_FORMAT = argparse.ArgumentDefaultsHelpFormatter


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum``; argparse names the flag when it is not."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0 (a learning rate, a temperature)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the result record as JSON on the last line"
    )


def _add_evaluator_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every evaluator shares: the encoder's build, loading, its row in the table."""
    parser.add_argument("--backbone", default="resnet18", help="for random/weights encoders")
    parser.add_argument("--small-stem", action="store_true", help="for random/weights encoders")
    parser.add_argument(
        "--num-workers", type=_int_at_least(0), default=2, help="data loading processes"
    )
    parser.add_argument("--label", default="", help="a name for this row in the results table")
    _add_json_flag(parser)
    parser.add_argument(
        "--results-csv", default=DEFAULT_RESULTS, help="append the result record to this CSV"
    )


def _finish(record: dict, args: argparse.Namespace) -> None:
    """Print the record; an evaluator's also goes into the results table that ``report`` reads."""
    from sslvision.eval.results import append_result, format_json_record

    if "results_csv" in args:  # evaluators only: pretrain and export rows are no results
        if args.label:
            record["label"] = args.label
        append_result(record, args.results_csv)
    if args.json:
        print(format_json_record(record))


def _pretrain(args: argparse.Namespace) -> int:
    from sslvision.config import config_yaml, load_config

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0
    from sslvision.engine.callbacks import PREEMPTED_EXIT_CODE
    from sslvision.engine.trainer import train

    result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    last = result.metrics[-1] if result.metrics else {}
    record = {
        "command": "pretrain",
        "config": args.config,
        "method": cfg.method.name,
        "backbone": cfg.model.backbone,
        "run_dir": str(result.run_dir),
        "checkpoint": str(result.checkpoint),
        "step": result.step,
        "status": result.status,
        "loss": last.get("loss"),
        "images_per_s": last.get("images_per_s"),
    }
    print(f"checkpoint: {result.checkpoint}")
    _finish(record, args)
    return PREEMPTED_EXIT_CODE if result.status == "preempted" else 0


def _knn(args: argparse.Namespace) -> None:
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
    )
    for k in args.k:
        print(
            f"kNN k={k}: top-1 {100 * record[f'knn_top1_k{k}']:.2f}%  "
            f"top-5 {100 * record[f'knn_top5_k{k}']:.2f}%  ({args.encoder})"
        )
    _finish(record, args)


def _export(args: argparse.Namespace) -> None:
    from sslvision.engine.export import export_backbone

    record = export_backbone(args.checkpoint, args.out or None)
    print(
        f"exported the {record['backbone']} backbone of a {record['method']} checkpoint "
        f"(step {record['step']}), {record['tensors']} tensors: {record['out']}"
    )
    print(f"load it into {record['load_with']}")
    if record["small_stem"]:
        print("its stem is model.small_stem's: a 3x3 stride-1 conv1 and no max-pool")
    _finish(record, args)


def _report(args: argparse.Namespace) -> None:
    from sslvision.eval.results import read_results

    table = read_results(args.results_csv, evaluator=args.evaluator)
    metrics = [c for c in table.columns if c.startswith(("knn_top1", "linear_", "ap"))]
    columns = [c for c in ["label", *REPORT_COLUMNS, *metrics] if c in table.columns]
    shown = table[columns].copy()
    for c in metrics:
        shown[c] = (100 * shown[c]).round(2)
    print(shown.to_string(index=False))
    if args.plot:
        from sslvision.eval.plots import plot_results

        metric = args.metric or (metrics[0] if metrics else "")
        print(f"plot: {plot_results(table, metric, args.plot)}")


def _detect(args: argparse.Namespace) -> None:
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
    _finish(record, args)


def _curves(args: argparse.Namespace) -> None:
    from sslvision.eval.plots import plot_curves

    print(f"plot: {plot_curves(args.run_dirs, args.columns, args.out)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sslvision",
        description="Self-supervised vision pretraining and evaluation.",
        epilog="Run 'sslvision <command> --help' for the options of a command.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    p = commands.add_parser(
        "pretrain",
        help="pretrain a backbone from a YAML recipe",
        description="Pretrain a backbone. Example: sslvision pretrain configs/simclr/demo.yaml "
        "train.epochs=5 optim.base_lr=0.6",
        formatter_class=HELP_FORMAT,
    )
    p.add_argument("config", help="YAML recipe, e.g. configs/simclr/imagenette.yaml")
    p.add_argument(
        "overrides", nargs="*", default=[], help="dotted overrides such as train.batch_size=128"
    )
    p.add_argument(
        "--resume",
        default=None,
        help="'auto': continue from the run's last checkpoint if any; or a checkpoint path",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a run directory that holds a checkpoint, deleting that run's outputs",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (every key, defaults filled in) as YAML and exit",
    )
    _add_json_flag(p)
    p.set_defaults(func=_pretrain)

    p = commands.add_parser(
        "knn",
        help="weighted kNN evaluation (DINO / InstDisc protocol)",
        description="kNN-evaluate an encoder: a checkpoint path, 'random', a torchvision weight "
        "name (ResNet18_Weights.IMAGENET1K_V1) or timm:<model>.<tag>. Data: an ImageFolder split "
        "directory, 'synthetic' (the embedded default) or cifar10:ROOT / cifar100:ROOT.",
        formatter_class=HELP_FORMAT,
    )
    p.add_argument("encoder", help="checkpoint path | random | weight name")
    p.add_argument("--train-data", required=True, help="the memory bank's images")
    p.add_argument("--val-data", required=True, help="the images to classify")
    p.add_argument(
        "--k", type=_int_at_least(1), nargs="+", default=[20, 200], help="neighbour counts"
    )
    p.add_argument(
        "--temperature", type=_positive_float, default=0.07, help="vote weight exp(sim / T)"
    )
    _add_evaluator_flags(p)
    p.add_argument(
        "--image-size",
        type=_int_at_least(1),
        default=None,
        help="load size; None: the checkpoint's, else 32",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the 'random' encoder's init")
    p.add_argument("--batch-size", type=_int_at_least(1), default=256, help="images a batch")
    p.set_defaults(func=_knn)

    p = commands.add_parser(
        "detect",
        help="detection transfer: fine-tune Faster R-CNN + FPN on the backbone, report AP50",
        description="Fine-tune a Faster R-CNN with FPN on the encoder's ResNet and "
        "report COCO-protocol AP50 and AP. Example: sslvision detect "
        "runs/densecl-imagenette64/checkpoints/last.pt --voc /data/det_fruits --steps 1000",
        formatter_class=HELP_FORMAT,
    )
    p.add_argument("encoder", help="checkpoint path | random | torchvision weight name")
    p.add_argument("--voc", default="", help="a VOC-layout root (Annotations/, ImageSets/Main/)")
    p.add_argument("--train-split", default="train", help="VOC split to train on")
    p.add_argument("--val-split", default="test", help="VOC split to evaluate on")
    p.add_argument("--coco-train", default="", help="COCO detection JSON to train on")
    p.add_argument("--coco-val", default="", help="COCO detection JSON to evaluate on")
    p.add_argument(
        "--image-root", default="", help="COCO file_name base; empty: the train JSON's folder"
    )
    p.add_argument("--steps", type=_int_at_least(1), default=1000, help="fine-tuning steps")
    p.add_argument("--batch-size", type=_int_at_least(1), default=4, help="images a step")
    p.add_argument(
        "--lr",
        type=_positive_float,
        default=0.005,
        help="peak SGD learning rate (0.02 per 16 images)",
    )
    p.add_argument("--norm", default="batch", choices=("batch", "frozen"), help="backbone BN")
    p.add_argument(
        "--min-size",
        type=_int_at_least(1),
        default=320,
        help="shorter image side for the detector",
    )
    p.add_argument(
        "--max-size", type=_int_at_least(1), default=512, help="longer image side at most"
    )
    p.add_argument(
        "--trainable-layers", type=int, choices=range(6), default=3, help="ResNet stages fine-tuned"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the heads' init and the order")
    _add_evaluator_flags(p)
    p.set_defaults(func=_detect)

    p = commands.add_parser(
        "export",
        help="write a checkpoint's backbone as a plain torchvision/timm state dict",
        description="Export the pretrained backbone for use outside sslvision: a file of tensors "
        "in the key names of torchvision or timm. Example: sslvision export "
        "runs/simclr-imagenette64/checkpoints/last.pt --out resnet18_simclr.pt",
        formatter_class=HELP_FORMAT,
    )
    p.add_argument("checkpoint", help="an sslvision checkpoint (.pt)")
    p.add_argument("--out", default="", help="output file; empty: <checkpoint>.backbone.pt")
    _add_json_flag(p)
    p.set_defaults(func=_export)

    p = commands.add_parser(
        "report", help="print the results table (and plot it)", formatter_class=HELP_FORMAT
    )
    p.add_argument(
        "results_csv", nargs="?", default=DEFAULT_RESULTS, help="the evaluators' results table"
    )
    p.add_argument("--evaluator", default="", help="only rows of this evaluator (e.g. knn)")
    p.add_argument("--plot", default="", help="also draw the rows as bars into this PNG")
    p.add_argument("--metric", default="", help="the plotted column; empty: the first metric")
    p.set_defaults(func=_report)

    p = commands.add_parser(
        "curves",
        help="plot training curves of runs",
        description="Plot columns of each run's metrics.csv against the step, one panel per "
        "column. Example: sslvision curves runs/simclr-demo runs/mocov2-demo --columns loss",
        formatter_class=HELP_FORMAT,
    )
    p.add_argument("run_dirs", nargs="+", help="run directories (each holds a metrics.csv)")
    p.add_argument("--columns", nargs="+", default=["loss"], help="e.g. loss knn_top1 lr")
    p.add_argument("--out", default="curves.png", help="the PNG to write")
    p.set_defaults(func=_curves)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sslvision`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and "overrides" in args and not any(item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]  # overrides after an option: CONFIG --flag k=v
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from sslvision.errors import UserError

    try:
        return args.func(args) or 0  # pretrain: PREEMPTED_EXIT_CODE when stopped by a signal
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
