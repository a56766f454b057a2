"""The short-budget study runs a grid in parallel processes and sums it up against random init."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from torchvision.io import write_png

REPO = Path(__file__).resolve().parents[2]
CLASS_LIST = REPO / "sslvision" / "data" / "class_lists" / "imagenette.txt"
WNIDS = [line for line in CLASS_LIST.read_text().splitlines() if line and not line.startswith("#")]
TINY = ["train.batch_size=4", "data.num_workers=0", "method.proj_hidden_dim=32"]


@pytest.fixture(scope="module")
def short_budget(load_benchmark):
    return load_benchmark("short_budget")


def tiny_imagenette(root: Path) -> Path:
    """train/ and val/ with two 32 px images in each Imagenette wnid folder."""
    generator = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for wnid in WNIDS:
            (root / split / wnid).mkdir(parents=True)
            for i in range(2):
                image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=generator)
                write_png(image, str(root / split / wnid / f"{i}.png"))
    return root


def write_grid(path: Path, *lines: str) -> Path:
    path.write_text("# a comment line\n\n" + "\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_a_grid_runs_every_seed_and_prints_the_summary(short_budget, tmp_path, capsys) -> None:
    data = tiny_imagenette(tmp_path / "data")
    grid = write_grid(
        tmp_path / "grid.txt",
        f"simclr-tiny simclr {' '.join(TINY)}  # trailing comment",
        "not-run simclr",
    )
    csv = tmp_path / "runs.csv"
    argv = ["--grid", str(grid), "--labels", "simclr-tiny", "--seeds", "0", "1", "--jobs", "2"]
    argv += ["--data", str(data), "--csv", str(csv), "--steps", "2", "--epochs", "1"]
    assert short_budget.main([*argv, "--precision", "no"]) == 0

    table = pd.read_csv(csv)
    assert table["label"].iloc[0] == "random init"
    runs = table[table["label"] == "simclr-tiny"]
    assert sorted(runs["seed"]) == [0, 1] and set(runs["steps"]) == {2}
    assert set(runs["overrides"]) == {" ".join(TINY)}
    out = capsys.readouterr().out
    assert "random init: kNN top-1" in out and "2 runs, 2 at a time" in out
    assert "simclr-tiny seed 0: kNN top-1" in out and "simclr-tiny seed 1: kNN top-1" in out
    summary_row = out.splitlines()[-1]  # the summary table's one row
    assert summary_row.split()[:2] == ["simclr-tiny", "2"]  # label, runs


def test_a_wrong_key_stops_the_grid_before_any_run(short_budget, tmp_path) -> None:
    data = tiny_imagenette(tmp_path / "data")
    grid = write_grid(tmp_path / "grid.txt", "typo mocov3 method.temprature=0.1")
    with pytest.raises(SystemExit, match=r"grid line 'typo'.*temprature"):
        short_budget.main(["--grid", str(grid), "--data", str(data), "--csv", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()


def test_grid_errors_name_the_line(short_budget, tmp_path) -> None:
    data = tiny_imagenette(tmp_path / "data")
    lonely = write_grid(tmp_path / "lonely.txt", "label-without-method")
    with pytest.raises(SystemExit, match=r"lonely.txt:3: a grid line is LABEL METHOD"):
        short_budget.main(["--grid", str(lonely), "--data", str(data)])
    grid = write_grid(tmp_path / "grid.txt", "a simclr")
    with pytest.raises(SystemExit, match="has no line b"):
        short_budget.main(["--grid", str(grid), "--labels", "b", "--data", str(data)])
    no_recipe = write_grid(tmp_path / "recipe.txt", "a no-such-method")
    with pytest.raises(SystemExit, match="no recipe"):
        short_budget.main(["--grid", str(no_recipe), "--data", str(data)])


def test_missing_data_is_a_message_not_a_failure(short_budget, tmp_path, capsys) -> None:
    assert short_budget.main(["--data", str(tmp_path / "absent")]) == 0
    assert "nothing to measure" in capsys.readouterr().out


def test_the_summary_counts_the_seeds_past_the_margin(short_budget) -> None:
    top1 = "knn_top1_k20"
    records = [
        {"label": "a", top1: 0.40},
        {"label": "a", top1: 0.37},  # above random, short of the margin
        {"label": "b", top1: 0.30},
        {"label": "b", "error": "CUDA out of memory"},  # failed runs are left out
    ]
    summary = short_budget.summarise(records, random_top1=0.365)
    assert summary.loc["a"].tolist() == [2, 0.385, 0.37, 0.40, 1]
    assert summary.loc["b"].tolist() == [1, 0.30, 0.30, 0.30, 0]


def test_the_budget_is_the_real_tests(short_budget) -> None:
    overrides = short_budget.budget_overrides("swav", "/data/train", "bf16")
    assert "train.max_steps=150" in overrides and "train.epochs=3" in overrides
    assert "method.freeze_prototypes_steps=20" in overrides
    assert "method.freeze_prototypes_steps=20" not in short_budget.budget_overrides(
        "byol", "d", "no"
    )
