"""``sslvision submit`` on a real SLURM cluster (tests/slurm/local_cluster.py): a run
interrupted the way SLURM interrupts it requeues, resumes from its checkpoint and finishes
with weights bitwise equal to an uninterrupted run, after a preemption and after a time-out; a
sweep of two points and a ``--then knn`` dependency complete.

The interrupt is SIGUSR2 to the job's tasks (``scancel --signal=USR2``), what SLURM sends
``--signal`` seconds before the time limit. submitit calls a job with a time limit of 10
minutes or less timed out whenever it is interrupted, and one of 30 minutes preempted when
interrupted in its first minutes; both requeue a checkpointable job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from sslvision.engine.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "simclr" / "demo.yaml"
# 128 images at 16 px, 8 a step: 16 steps, a checkpoint every 2.
BUDGET = [
    "data.image_size=16",
    "augment.size=16",
    "data.num_images=128",
    "train.batch_size=8",
    "train.epochs=1",
    "train.progress_bar=false",
    "train.deterministic=true",
    "train.precision=no",
    "method.proj_hidden_dim=32",
    "method.proj_output_dim=16",
    "checkpoint.save_every_steps=2",
    "checkpoint.keep_every_epochs=0",
]
TOTAL_STEPS = 16
INTERRUPT_AT_STEP = 4
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}
FINAL_EVENTS = {state.lower() for state in FINAL_STATES}
WAIT_S = 300

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _submit(cluster, folder: Path, *args: str) -> list[dict]:
    """``sslvision submit`` as a user runs it; the jobs it recorded in ``jobs.jsonl``."""
    command = [sys.executable, "-m", "sslvision.cli", "submit", str(RECIPE), *BUDGET, *args]
    command += ["--gpus-per-node", "0", "--partition", cluster.partition, "--folder", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sslvision jobs" in done.stdout
    return [json.loads(line) for line in (folder / "jobs.jsonl").read_text().splitlines()]


def _state(cluster, job_id: str) -> str:
    """The job's state: squeue's while it is queued or running, then sacct's final one."""
    queued = cluster.run("squeue", "-h", "-j", job_id, "-o", "%T", check=False).split()
    if queued:
        return queued[0]
    rows = cluster.run("sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State", check=False)
    states = [row.split()[0] for row in rows.splitlines() if row.strip()]
    return states[-1] if states else "UNKNOWN"


def _checkpoint_step(run_dir: Path) -> int:
    last = run_dir / "checkpoints" / "last.pt"
    try:
        return int(load_checkpoint(last)["step"]) if last.is_file() else 0
    except Exception:  # being replaced this instant
        return 0


def _follow(
    cluster, jobs: dict[str, dict], interrupt: set[str], started: float
) -> dict[str, dict[str, float]]:
    """Poll every job until all are final; interrupt those in ``interrupt`` once their run
    has checkpointed step INTERRUPT_AT_STEP. Each job's timeline, in seconds since
    ``started`` (``time.monotonic()`` before the first submission)."""
    timeline: dict[str, dict[str, float]] = {job_id: {} for job_id in jobs}
    while time.monotonic() - started < WAIT_S:
        now = round(time.monotonic() - started, 1)
        for job_id, job in jobs.items():
            events = timeline[job_id]
            state = _state(cluster, job_id)
            if state == "RUNNING":
                events.setdefault("running", now)
                if "requeued" in events:
                    events.setdefault("running again", now)
            if job_id in interrupt and "signal" not in events:
                if _checkpoint_step(Path(job["run_dir"])) >= INTERRUPT_AT_STEP:
                    cluster.run("scancel", "--signal=USR2", job_id)
                    events["signal"] = now
            elif "signal" in events and state in ("PENDING", "REQUEUED"):
                events.setdefault("requeued", now)
            if state in FINAL_STATES:
                events.setdefault(state.lower(), now)
        if all(FINAL_EVENTS & events.keys() for events in timeline.values()):
            return timeline
        time.sleep(0.5)
    raise AssertionError(f"jobs not finished within {WAIT_S} s: {timeline}")


def _model(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def test_preempted_and_timed_out_runs_requeue_and_finish_bitwise_equal(
    slurm_cluster, tmp_path: Path
) -> None:
    folder = tmp_path / "jobs"
    runs, started = {}, time.monotonic()
    for name, minutes in (("straight", 30), ("preempted", 30), ("timed-out", 5)):
        (job,) = _submit(
            slurm_cluster, folder, f"output_dir={tmp_path}", f"name={name}", "--time", str(minutes)
        )[len(runs) :]
        runs[job["job_id"]] = job | {"name": name}
    interrupted = {job_id for job_id, job in runs.items() if job["name"] != "straight"}
    timeline = _follow(slurm_cluster, runs, interrupted, started)
    print(f"SLURM timeline (seconds from submission): {timeline}")

    straight = _model(tmp_path / "straight")
    for job_id, job in runs.items():
        events = timeline[job_id]
        assert "completed" in events, f"{job['name']}: {events}"
        run_dir = Path(job["run_dir"])
        assert _checkpoint_step(run_dir) == TOTAL_STEPS
        if job_id in interrupted:
            assert "requeued" in events and "running again" in events, f"{job['name']}: {events}"
            log = Path(job["stderr"]).read_text()
            case = "timed-out" if job["name"] == "timed-out" else "preempted"
            assert f"this job is {case}" in log, log[-2000:]
            assert "resuming from" in Path(job["stdout"]).read_text()
            model = _model(run_dir)
            assert model.keys() == straight.keys()
            assert all(torch.equal(model[key], straight[key]) for key in straight), job["name"]


def test_a_two_rank_sweep_and_its_knn_evaluations_complete(slurm_cluster, tmp_path: Path) -> None:
    folder, started = tmp_path / "jobs", time.monotonic()
    jobs = _submit(
        slurm_cluster,
        folder,
        f"output_dir={tmp_path}",
        "--tasks-per-node",
        "2",  # two ranks a run: rank, world size and rendezvous from SLURM's job environment
        "--sweep",
        "optim.base_lr=0.3,0.6",
        "--then",
        "knn",
        "--eval-train-data",
        "synthetic:64",
        "--eval-val-data",
        "synthetic:32",
    )
    assert [job["kind"] for job in jobs] == ["pretrain", "pretrain", "knn", "knn"]
    assert {Path(job["run_dir"]).name for job in jobs} == {
        "simclr-demo-base_lr0.3",
        "simclr-demo-base_lr0.6",
    }
    timeline = _follow(slurm_cluster, {job["job_id"]: job for job in jobs}, set(), started)
    assert all("completed" in events for events in timeline.values()), timeline
    for job in jobs[:2]:  # both ranks trained the run: the checkpoint holds two RNG states
        assert len(load_checkpoint(Path(job["run_dir"]) / "checkpoints" / "last.pt")["rng"]) == 2
    results = pd.read_csv(folder / "results.csv")
    assert sorted(results["label"]) == [
        "simclr-demo-base_lr0.3 (knn)",
        "simclr-demo-base_lr0.6 (knn)",
    ]
    table = subprocess.run(
        [sys.executable, "-m", "sslvision.cli", "jobs", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("COMPLETED") == 4
