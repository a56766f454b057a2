"""The ``submit`` and ``jobs`` commands of ``sslvision``: their flags and what they print."""

from __future__ import annotations

import argparse
from pathlib import Path

from sslvision.eval.commands.argtypes import int_at_least
from sslvision.launch.slurm import SlurmOptions

DEFAULT_FOLDER = "slurm_jobs"


def add_commands(commands: argparse._SubParsersAction, formatter: type) -> None:
    """Add ``submit`` and ``jobs`` to the ``sslvision`` command parser."""
    p = commands.add_parser(
        "submit",
        help="pretrain on SLURM (submitit): requeued on preemption and time-out",
        description="Submit a pretraining run to SLURM, one task per GPU; a preempted or "
        "timed-out job checkpoints at the next step and requeues itself with --resume auto. "
        "Example: sslvision submit configs/simclr/imagenette.yaml train.epochs=200 --nodes 2 "
        "--gpus-per-node 8 --partition gpu --time 1440 --then knn --eval-train-data "
        "/data/train --eval-val-data /data/val",
        formatter_class=formatter,
    )
    p.add_argument("config", help="YAML recipe, e.g. configs/simclr/imagenette.yaml")
    p.add_argument("overrides", nargs="*", default=[], help="dotted overrides, as for pretrain")
    p.add_argument("--nodes", type=int_at_least(1), default=1, help="nodes of the job")
    p.add_argument("--gpus-per-node", type=int_at_least(0), default=1, help="one task per GPU")
    p.add_argument(
        "--tasks-per-node", type=int_at_least(1), default=None, help="default: one per GPU"
    )
    p.add_argument("--partition", default=None, help="default: the cluster's")
    p.add_argument("--time", type=int_at_least(1), default=60, help="time limit in minutes")
    p.add_argument("--account", default=None, help="sbatch --account")
    p.add_argument("--qos", default=None, help="sbatch --qos")
    p.add_argument("--constraint", default=None, help="sbatch --constraint, e.g. a100")
    p.add_argument("--mem-per-gpu", default=None, help="e.g. 32G")
    p.add_argument(
        "--cpus-per-task", type=int_at_least(1), default=None, help="for the data loaders"
    )
    p.add_argument("--job-name", default="sslvision", help="SLURM's job name")
    p.add_argument("--folder", default=DEFAULT_FOLDER, help="submitit's scripts, pickles and logs")
    p.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a swept setting (repeatable): the product is submitted as one job array",
    )
    p.add_argument(
        "--then", default="", help="evaluators to run on the final checkpoint, e.g. knn,linear"
    )
    p.add_argument("--eval-train-data", default="", help="the evaluators' --train-data")
    p.add_argument("--eval-val-data", default="", help="the evaluators' --val-data")
    p.add_argument(
        "--resume", action="store_true", help="continue run directories that hold checkpoints"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="start such run directories afresh instead"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the sbatch script and the resolved configs; submit nothing",
    )
    p.set_defaults(func=_submit)

    p = commands.add_parser(
        "jobs",
        help="the state of the jobs submitted from a folder",
        description="SLURM's state of each job submitted from FOLDER, with its run's last "
        "logged step and metrics. Example: sslvision jobs slurm_jobs",
        formatter_class=formatter,
    )
    p.add_argument("folder", nargs="?", default=DEFAULT_FOLDER, help="the --folder of submit")
    p.set_defaults(func=_jobs)


def _options(args: argparse.Namespace) -> SlurmOptions:
    return SlurmOptions(
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        tasks_per_node=args.tasks_per_node,
        partition=args.partition,
        time_min=args.time,
        account=args.account,
        qos=args.qos,
        constraint=args.constraint,
        mem_per_gpu=args.mem_per_gpu,
        cpus_per_task=args.cpus_per_task,
        job_name=args.job_name,
    )


def _submit(args: argparse.Namespace) -> int:
    from sslvision.launch.submit import EvalPlan, dry_run, plan_runs, submit

    folder = Path(args.folder).absolute()
    options = _options(args)
    if args.dry_run:
        print(dry_run(plan_runs(args.config, args.overrides, args.sweep), options, folder))
        return 0
    evaluators = tuple(name for name in args.then.split(",") if name)
    plan = EvalPlan(evaluators, args.eval_train_data, args.eval_val_data)
    jobs = submit(
        args.config,
        args.overrides,
        options,
        folder,
        sweeps=args.sweep,
        then=plan,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    for job in jobs:
        after = f" after {job.depends_on}" if job.depends_on else ""
        print(f"job {job.job_id} ({job.kind}{after}): run {job.run_dir}, log {job.stdout}")
    print(f"sslvision jobs {folder}  # their state")
    return 0


def _jobs(args: argparse.Namespace) -> int:
    from sslvision.launch.status import job_table

    print(job_table(Path(args.folder)).to_string(index=False))
    return 0
