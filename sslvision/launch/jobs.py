"""The callables submitit runs on the cluster: a pretraining run and an evaluation, each
checkpointable, so that a preemption or a time-out requeues them and they continue.

How a stop travels: SLURM signals every task (SIGUSR2 before the time limit, SIGTERM on a
preemption). The run's :class:`~sslvision.engine.callbacks.Preemption` hook catches it on
every rank, all ranks stop at the same step boundary and the checkpoint is written. Then rank 0
hands the stop to submitit's own handler, which tells a time-out from a preemption, counts the
time-outs, calls :meth:`checkpoint` and requeues the job; the requeued job runs with ``--resume
auto`` on the same run directory, so it never restarts from scratch or from a stale path. The
other ranks wait for the requeue to end them instead of reporting a result.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field, replace
from typing import Any

import submitit

from sslvision.engine.callbacks.preemption import PREEMPTED_EXIT_CODE

REQUEUE_WAIT_S = 300  # how long a non-zero rank waits for rank 0's requeue to end it


def _join_process_group() -> None:
    """Export rank, world size and rendezvous address from SLURM's job environment (env://).

    Each task keeps every GPU of its node visible and takes ``cuda:LOCAL_RANK``, as accelerate
    expects, rather than the one-device view submitit can set.
    """
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def _hand_stop_to_submitit() -> None:
    """Rank 0: let submitit's SIGUSR2 handler checkpoint (``self.checkpoint``) and requeue;
    it exits the process. Other ranks: wait until the requeue cancels this job."""
    if submitit.JobEnvironment().global_rank == 0:
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(60)  # the handler runs between two bytecodes and exits; this is never reached
        raise RuntimeError("submitit's signal handler did not requeue the job")
    time.sleep(REQUEUE_WAIT_S)
    raise RuntimeError(f"rank 0 did not requeue the job within {REQUEUE_WAIT_S} s")


@dataclass
class PretrainJob(submitit.helpers.Checkpointable):
    """``sslvision pretrain CONFIG OVERRIDES --resume auto`` as one task of a SLURM job."""

    config: str
    overrides: list[str] = field(default_factory=list)
    overwrite: bool = False

    def __call__(self) -> dict[str, Any]:
        from sslvision.config import load_config
        from sslvision.engine.trainer import train

        _join_process_group()
        cfg = load_config(self.config, self.overrides)
        result = train(cfg, resume="auto", overwrite=self.overwrite)
        if result.status == "preempted":
            _hand_stop_to_submitit()
        return {"run_dir": str(result.run_dir), "checkpoint": str(result.checkpoint)}

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """The requeued job: the same run, resumed; never ``--overwrite`` (it would start over)."""
        return submitit.helpers.DelayedSubmission(replace(self, overwrite=False))


@dataclass
class EvalJob(submitit.helpers.Checkpointable):
    """``sslvision <evaluator> ARGS`` as a SLURM job; a stopped probe resumes when requeued."""

    argv: list[str]

    def __call__(self) -> int:
        from sslvision.cli import main

        code = main(self.argv)
        if code == PREEMPTED_EXIT_CODE:
            _hand_stop_to_submitit()
        if code:
            raise RuntimeError(f"sslvision {' '.join(self.argv)} exited with {code}")
        return code

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self)
