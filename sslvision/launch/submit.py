"""``sslvision submit``: a pretraining run (or a sweep of them, as one job array) on SLURM,
and the evaluations that start when it has finished.

Every job is written to ``FOLDER/jobs.jsonl`` (id, kind, run directory, log files), which
``sslvision jobs FOLDER`` reads back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sslvision.config import Config, config_yaml, load_config
from sslvision.engine.optim import scaling_record
from sslvision.errors import ConfigError, RunDirectoryError
from sslvision.launch.jobs import EvalJob, PretrainJob
from sslvision.launch.slurm import SlurmOptions, make_executor, sbatch_script
from sslvision.launch.sweep import point_name, point_overrides, sweep_points

MANIFEST = "jobs.jsonl"
THEN_CHOICES = ("knn", "linear", "logreg", "fewshot")


@dataclass
class EvalPlan:
    """``--then``: evaluators run on each run's final checkpoint, with their own data."""

    evaluators: tuple[str, ...] = ()
    train_data: str = ""
    val_data: str = ""
    results_csv: str = ""

    def check(self) -> None:
        unknown = [name for name in self.evaluators if name not in THEN_CHOICES]
        if unknown:
            raise ConfigError(
                f"--then {','.join(unknown)}: unknown evaluator. Valid choices: "
                f"{', '.join(THEN_CHOICES)}."
            )
        if self.evaluators and not (self.train_data and self.val_data):
            raise ConfigError("--then needs --eval-train-data and --eval-val-data")

    def argv(self, evaluator: str, run_dir: Path) -> list[str]:
        """The evaluator's command line on the run's last checkpoint."""
        argv = [evaluator, str(run_dir / "checkpoints" / "last.pt")]
        argv += ["--train-data", self.train_data, "--val-data", self.val_data]
        argv += ["--label", f"{run_dir.name} ({evaluator})", "--results-csv", self.results_csv]
        if evaluator == "linear":  # checkpointed: a requeued probe continues
            argv += ["--run-dir", str(run_dir / "linear"), "--resume", "auto"]
        return argv


@dataclass
class Submitted:
    """One submitted job, as ``jobs.jsonl`` records it."""

    job_id: str
    kind: str  # pretrain, or an evaluator's name
    run_dir: str
    stdout: str
    stderr: str
    depends_on: str = ""


@dataclass
class PlannedRun:
    """A run to submit: its resolved config and the overrides that make it from the recipe."""

    cfg: Config
    overrides: list[str]


def plan_runs(config: str, overrides: Sequence[str], sweeps: Sequence[str]) -> list[PlannedRun]:
    """Every sweep point's run (one run without sweeps), each with its own run name."""
    base = load_config(config, list(overrides))  # a wrong key fails here, before any sweep
    points = sweep_points(list(sweeps))
    if points == [{}]:
        return [PlannedRun(base, list(overrides))]
    runs = []
    for point in points:
        point_args = [*overrides, *point_overrides(point), f"name={point_name(base.name, point)}"]
        runs.append(PlannedRun(load_config(config, point_args), point_args))
    return runs


def _check_run_dirs(runs: Sequence[PlannedRun], resume: bool, overwrite: bool) -> None:
    """A run directory that holds a checkpoint is continued only when asked (``--resume``),
    or started afresh with ``--overwrite``; by default the submission stops before any job."""
    if resume or overwrite:
        return
    taken = [str(r.cfg.run_dir) for r in runs if (r.cfg.run_dir / "checkpoints").is_dir()]
    if taken:
        raise RunDirectoryError(
            f"{', '.join(taken)} already hold(s) checkpoints: pass --resume to continue, "
            "--overwrite to start afresh, or another name=..."
        )


def dry_run(runs: Sequence[PlannedRun], options: SlurmOptions, folder: Path) -> str:
    """The sbatch script and each point's resolved config, as ``--dry-run`` prints them."""
    params = options.executor_parameters()
    script = sbatch_script(folder, params, array_size=len(runs))
    world = f"world size {options.world_size()} ({options.nodes} node(s) x {options.tasks()})"
    text = [f"# sbatch script: {len(runs)} run(s), {world}, folder {folder}", script]
    for run in runs:
        scaling = scaling_record(run.cfg, options.world_size())
        derived = ", ".join(f"{key} {value}" for key, value in scaling.items())
        text += [f"# resolved config of {run.cfg.run_dir} ({derived})", config_yaml(run.cfg)]
    return "\n".join(text)


def submit(
    config: str,
    overrides: Sequence[str],
    options: SlurmOptions,
    folder: Path,
    sweeps: Sequence[str] = (),
    then: EvalPlan | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> list[Submitted]:
    """Submit the runs (an array when there are several) and their evaluations."""
    then = then or EvalPlan()
    then.check()
    options.check()
    runs = plan_runs(config, overrides, sweeps)
    _check_run_dirs(runs, resume, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    executor = make_executor(folder, options.executor_parameters())
    with executor.batch():  # one array job for a sweep, a plain job for one run
        handles = [executor.submit(PretrainJob(config, run.overrides, overwrite)) for run in runs]
    pretrains = [_record(h, "pretrain", r.cfg.run_dir) for h, r in zip(handles, runs, strict=True)]
    submitted = list(pretrains)
    if then.evaluators:
        then.results_csv = then.results_csv or str(folder / "results.csv")
        for pretrain, run in zip(pretrains, runs, strict=True):
            submitted += _submit_evaluations(
                then, run.cfg.run_dir, pretrain.job_id, folder, options
            )
    _append_manifest(folder, submitted)
    return submitted


def _submit_evaluations(
    then: EvalPlan, run_dir: Path, after: str, folder: Path, options: SlurmOptions
) -> list[Submitted]:
    """One single-task job per evaluator, started only once the pretraining job succeeded."""
    single = replace(
        options,
        nodes=1,
        gpus_per_node=min(options.gpus_per_node, 1),
        tasks_per_node=1,
        job_name=f"{options.job_name}-eval",
    )
    executor = make_executor(folder, single.executor_parameters(dependency=f"afterok:{after}"))
    submitted = []
    for evaluator in then.evaluators:
        handle = executor.submit(EvalJob(then.argv(evaluator, run_dir)))
        submitted.append(_record(handle, evaluator, run_dir, depends_on=after))
    return submitted


def _record(handle: Any, kind: str, run_dir: Path, depends_on: str = "") -> Submitted:
    paths = handle.paths
    return Submitted(
        handle.job_id, kind, str(run_dir), str(paths.stdout), str(paths.stderr), depends_on
    )


def _append_manifest(folder: Path, submitted: Sequence[Submitted]) -> None:
    with (folder / MANIFEST).open("a") as f:
        for job in submitted:
            f.write(json.dumps(asdict(job)) + "\n")


def read_manifest(folder: Path) -> list[Submitted]:
    """The jobs submitted from ``folder``, oldest first."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ConfigError(f"no jobs were submitted from {folder} (no {MANIFEST} there)")
    return [Submitted(**json.loads(line)) for line in path.read_text().splitlines() if line]
