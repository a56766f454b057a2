"""``sslvision jobs FOLDER``: the jobs submitted from a folder, with SLURM's state (through
submitit, which asks ``sacct``) beside each run's last logged step and metrics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sslvision.launch.submit import read_manifest

SHOWN_METRICS = ("loss", "knn_top1", "online_linear_top1", "images_per_s")


def _slurm_state(folder: Path, job_id: str) -> str:
    import submitit

    try:
        return submitit.SlurmJob(folder=folder, job_id=job_id).state
    except (OSError, RuntimeError) as exc:  # no sacct on this machine
        return f"unknown ({exc})"


def _last_metrics(run_dir: Path) -> dict[str, object]:
    """The run's last row of ``metrics.csv`` (nothing before its first logged step)."""
    path = run_dir / "metrics.csv"
    if not path.is_file() or path.stat().st_size == 0:
        return {}
    rows = pd.read_csv(path)
    if rows.empty:
        return {}
    last = rows.iloc[-1]
    return {"step": int(last["step"])} | {
        name: last[name] for name in SHOWN_METRICS if name in rows and pd.notna(last[name])
    }


def job_table(folder: Path) -> pd.DataFrame:
    """One row a job: id, kind, state, run directory, last step and metrics, log file."""
    rows = []
    for job in read_manifest(folder):
        row: dict[str, object] = {"job_id": job.job_id, "kind": job.kind}
        row["state"] = _slurm_state(folder, job.job_id)
        row["run_dir"] = job.run_dir
        if job.kind == "pretrain":
            row.update(_last_metrics(Path(job.run_dir)))
        row["log"] = job.stdout
        rows.append(row)
    return pd.DataFrame(rows)
