"""``sslvision submit`` without a cluster: the dry run's sbatch script and resolved configs,
sweeps as arrays, the checks that stop a submission before any job, and the checkpointable
jobs' requeue state. Real submissions are in tests/slurm."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import yaml

from sslvision.cli import main
from sslvision.launch.jobs import PretrainJob
from sslvision.launch.sweep import point_name, sweep_points

REPO = Path(__file__).resolve().parents[2]
RECIPE = str(REPO / "configs" / "simclr" / "demo.yaml")


def _dry_run(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert main(["submit", RECIPE, *args, "--dry-run"]) == 0
    return capsys.readouterr().out


def test_dry_run_prints_the_sbatch_script_and_the_resolved_config(capsys, tmp_path) -> None:
    out = _dry_run(
        capsys,
        "train.batch_size=64",
        "--nodes",
        "2",
        "--gpus-per-node",
        "4",
        "--partition",
        "gpu",
        "--time",
        "120",
        "--account",
        "lab",
        "--folder",
        str(tmp_path),
    )
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",  # one task per GPU
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=120",
        "#SBATCH --account=lab",
        "#SBATCH --signal=USR2@90",  # the time-out warning the run takes as a preemption
    ):
        assert line in out
    assert "world_size 8" in out and "global_batch 512" in out
    assert "peak_lr 1.2" in out  # base_lr 0.6 x 512 / 256
    config = yaml.safe_load(out.split("# resolved config of", 1)[1].split("\n", 1)[1])
    assert config["train"]["batch_size"] == 64
    assert not list(tmp_path.iterdir()), "a dry run writes nothing"


def test_a_sweep_is_one_array_with_a_run_per_point(capsys) -> None:
    out = _dry_run(capsys, "--sweep", "optim.base_lr=0.3,0.6", "--sweep", "seed=0,1")
    assert "#SBATCH --array=0-3" in out
    names = [yaml.safe_load(part.split("\n", 1)[1])["name"] for part in out.split("# resolved")[1:]]
    assert names == [
        "simclr-demo-base_lr0.3-seed0",
        "simclr-demo-base_lr0.3-seed1",
        "simclr-demo-base_lr0.6-seed0",
        "simclr-demo-base_lr0.6-seed1",
    ]


def test_sweep_points_and_names() -> None:
    assert sweep_points([]) == [{}]
    assert point_name("run", {"data.path": "/a b"}) == "run-path_a_b"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sweep", "optim.base_lr"], "write key=v1,v2"),
        (["--sweep", "seed=1,1"], "lists a value twice"),
        (["--sweep", "seed=1", "--sweep", "seed=2"], "names seed twice"),
        (["--sweep", "optim.base_rl=1,2"], "base_rl"),  # a wrong key names the key
        (["--gpus-per-node", "2", "--tasks-per-node", "3"], "one task per GPU"),
        (["--then", "knn"], "--eval-train-data"),
        (["--then", "probe", "--eval-train-data", "a", "--eval-val-data", "b"], "knn, linear"),
    ],
)
def test_bad_submissions_exit_2_before_any_job(args, message, capsys, tmp_path) -> None:
    code = main(["submit", RECIPE, f"output_dir={tmp_path}", *args, "--folder", str(tmp_path)])
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_run_directory_with_checkpoints_needs_resume_or_overwrite(capsys, tmp_path) -> None:
    (tmp_path / "simclr-demo" / "checkpoints").mkdir(parents=True)
    assert main(["submit", RECIPE, f"output_dir={tmp_path}", "--folder", str(tmp_path)]) == 2
    assert "--resume to continue" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("srun") is not None, reason="a SLURM client is installed")
def test_submitting_without_slurm_says_so(capsys, tmp_path) -> None:
    assert main(["submit", RECIPE, f"output_dir={tmp_path}", "--folder", str(tmp_path)]) == 2
    assert "--dry-run prints the script" in capsys.readouterr().err


def test_jobs_of_a_folder_without_submissions(capsys, tmp_path) -> None:
    assert main(["jobs", str(tmp_path)]) == 2
    assert "no jobs were submitted" in capsys.readouterr().err


def test_a_requeued_pretraining_job_resumes_and_never_overwrites() -> None:
    job = PretrainJob(RECIPE, ["train.epochs=1"], overwrite=True)
    requeued = job.checkpoint().function
    assert requeued == PretrainJob(RECIPE, ["train.epochs=1"], overwrite=False)
    assert pickle.loads(pickle.dumps(requeued)) == requeued  # submitit pickles it
