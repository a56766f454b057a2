"""``sslvision <command>``: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence

from sslvision.eval.commands.argtypes import int_at_least
from sslvision.eval.evaluator import Evaluator, metric_columns
from sslvision.registry import EVALUATORS

DEFAULT_RESULTS = "results/results.csv"
REPORT_COLUMNS = ["evaluator", "encoder", "method", "backbone", "val_data"]
# Every command's --help shows the defaults.
HELP_FORMAT = argparse.ArgumentDefaultsHelpFormatter


def _add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the result record as JSON on the last line"
    )


def _add_evaluator_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every evaluator shares: the encoder's build, loading, its row in the table."""
    parser.add_argument("--backbone", default="resnet18", help="for random/weights encoders")
    parser.add_argument("--small-stem", action="store_true", help="for random/weights encoders")
    parser.add_argument(
        "--num-workers", type=int_at_least(0), default=2, help="data loading processes"
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


def _evaluate(evaluator: type[Evaluator], args: argparse.Namespace) -> int:
    """A registered evaluator's command: run it, then record and print its result. A run that
    a signal stopped (``status`` "preempted") has no result to record and exits 75."""
    record = evaluator.run(args)
    if record.get("status") == "preempted":
        from sslvision.engine.callbacks import PREEMPTED_EXIT_CODE

        return PREEMPTED_EXIT_CODE
    _finish(record, args)
    return 0


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
    metrics = metric_columns(table.columns)
    columns = [c for c in ["label", *REPORT_COLUMNS, *metrics] if c in table.columns]
    shown = table[columns].copy()
    for c in metrics:
        shown[c] = (100 * shown[c]).round(2)
    print(shown.to_string(index=False))
    if args.plot:
        from sslvision.eval.plots import plot_results

        metric = args.metric or (metrics[0] if metrics else "")
        print(f"plot: {plot_results(table, metric, args.plot)}")


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

    for name in EVALUATORS.names():
        evaluator: type[Evaluator] = EVALUATORS.get(name)
        p = commands.add_parser(
            name,
            help=evaluator.help,
            description=evaluator.description,
            formatter_class=HELP_FORMAT,
        )
        evaluator.add_arguments(p)
        _add_evaluator_flags(p)
        p.set_defaults(func=functools.partial(_evaluate, evaluator))

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

    from sslvision.launch.commands import add_commands  # submit, jobs

    add_commands(commands, HELP_FORMAT)
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
