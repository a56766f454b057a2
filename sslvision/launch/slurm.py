"""What a SLURM job asks for, as submitit's ``SlurmExecutor`` parameters and as an sbatch script.

One task per GPU (``--gpus-per-node G`` gives G tasks a node, each a rank of the run); on a
cluster without GPUs ``--tasks-per-node`` sets the ranks a node. SLURM sends SIGUSR2 ninety
seconds before the time limit (submitit's ``--signal``), which the run takes as a preemption.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslvision.errors import ConfigError

SIGNAL_DELAY_S = 90  # SIGUSR2 this long before the time limit: time to finish a step and save
MAX_TIMEOUT_REQUEUES = 10  # time-outs a job may requeue after (preemptions do not count)


@dataclass
class SlurmOptions:
    """The resources of one job; ``None`` leaves the cluster's default."""

    nodes: int = 1
    gpus_per_node: int = 1
    tasks_per_node: int | None = None  # default: one per GPU, or one on a CPU-only node
    partition: str | None = None
    time_min: int = 60
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    mem_per_gpu: str | None = None
    cpus_per_task: int | None = None
    job_name: str = "sslvision"

    def tasks(self) -> int:
        """Ranks a node: one per GPU unless set."""
        if self.tasks_per_node is not None:
            return self.tasks_per_node
        return max(self.gpus_per_node, 1)

    def world_size(self) -> int:
        return self.nodes * self.tasks()

    def check(self) -> None:
        for name in ("nodes", "time_min"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.gpus_per_node < 0 or self.tasks() < 1:
            raise ConfigError("--gpus-per-node must be >= 0 and --tasks-per-node >= 1")
        if self.gpus_per_node and self.tasks() != self.gpus_per_node:
            raise ConfigError(
                f"--tasks-per-node {self.tasks()} with --gpus-per-node {self.gpus_per_node}: "
                "the launcher runs one task per GPU"
            )

    def executor_parameters(self, dependency: str | None = None) -> dict[str, Any]:
        """Keyword arguments of ``SlurmExecutor.update_parameters`` (sbatch's own names)."""
        self.check()
        params: dict[str, Any] = {
            "job_name": self.job_name,
            "nodes": self.nodes,
            "ntasks_per_node": self.tasks(),
            "time": self.time_min,
            "signal_delay_s": SIGNAL_DELAY_S,
        }
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        optional = {
            "partition": self.partition,
            "account": self.account,
            "qos": self.qos,
            "constraint": self.constraint,
            "mem_per_gpu": self.mem_per_gpu,
            "cpus_per_task": self.cpus_per_task,
        }
        params.update({key: value for key, value in optional.items() if value is not None})
        if dependency:
            params["additional_parameters"] = {"dependency": dependency}
        return params


def make_executor(folder: Path, params: dict[str, Any]) -> Any:
    """submitit's SLURM executor writing its scripts, pickles and logs under ``folder``."""
    import submitit

    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_TIMEOUT_REQUEUES)
    except RuntimeError as exc:  # no srun: not on a SLURM login node
        raise ConfigError(f"cannot submit: {exc} (--dry-run prints the script instead)") from exc
    executor.update_parameters(**params)
    return executor


def sbatch_script(folder: Path, params: dict[str, Any], array_size: int = 1) -> str:
    """The sbatch script submitit would submit with ``params`` (for ``--dry-run``).

    submitit builds it in ``submitit.slurm.slurm._make_sbatch_string``, which needs no cluster;
    it has no public name, so a change there shows up in ``tests/launch`` first.
    """
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", str(folder)])
    map_count = {"map_count": array_size} if array_size > 1 else {}
    return _make_sbatch_string(command=command, folder=folder, **params, **map_count)
