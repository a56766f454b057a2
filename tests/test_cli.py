"""The ``sslvision`` command as a user runs it: pretrain, knn, report, and its error messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sslvision.cli import main
from sslvision.config import load_config, to_dict
from sslvision.methods.simclr import SimCLRConfig


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "cli",
                "output_dir": str(tmp_path / "runs"),
                "data": {"dataset": "synthetic", "image_size": 16, "num_images": 64},
                "augment": {"size": 16},
                "method": {"name": "simclr", "proj_hidden_dim": 32, "proj_output_dim": 16},
                "train": {"epochs": 1, "batch_size": 16, "progress_bar": False},
            }
        )
    )
    return path


def test_pretrain_then_knn_then_report(recipe: Path, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results.csv"
    assert main(["pretrain", str(recipe), "data.num_workers=0", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["step"] == 4 and Path(record["checkpoint"]).is_file()

    knn = ["--train-data", "synthetic:64", "--val-data", "synthetic:32", "--k", "5", "20"]
    common = ["--num-workers", "0", "--results-csv", str(results), "--json"]
    assert main(["knn", record["checkpoint"], *knn, *common]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("kNN k=5: top-1")
    knn_record = json.loads(out[-1])
    assert 0.0 <= knn_record["knn_top1_k20"] <= 1.0
    assert knn_record["num_train"] == 64 and knn_record["image_size"] == 16

    table = pd.read_csv(results)  # the evaluator's row only: pretraining is no result
    assert list(table["evaluator"]) == ["knn"] and "command" not in table.columns
    assert main(["report", str(results), "--evaluator", "knn"]) == 0
    assert "knn_top1_k20" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["pretrain", "export"])
def test_pretrain_and_export_write_no_results_row(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "x.yaml" if command == "pretrain" else "x.pt", "--results-csv", "r.csv"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --results-csv r.csv" in capsys.readouterr().err


def test_print_config_prints_every_key_resolved_and_trains_nothing(
    recipe: Path, tmp_path: Path, capsys
) -> None:
    """Options may come between the recipe and the overrides."""
    argv = ["pretrain", str(recipe), "--print-config", "train.epochs=3", "optim.name=lars"]
    assert main(argv) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == to_dict(load_config(recipe, ["train.epochs=3", "optim.name=lars"]))
    assert printed["train"]["epochs"] == 3 and printed["optim"]["warmup_epochs"] == 10.0
    assert printed["method"]["temperature"] == SimCLRConfig.temperature  # a default filled in
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["pretrain", "knn", "detect", "export", "report", "curves"])
def test_every_command_help_shows_its_defaults(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # help wraps lines
    expected = {
        "pretrain": "(default: None)",  # --resume
        "knn": "neighbour counts (default: [20, 200])",
        "detect": "fine-tuning steps (default: 1000)",
        "export": "(default: False)",  # --json
        "report": "(default: results/results.csv)",
        "curves": "the PNG to write (default: curves.png)",
    }
    assert expected[command] in out


def test_unknown_config_key_names_it_and_the_closest_valid_key(recipe: Path, capsys) -> None:
    assert main(["pretrain", str(recipe), "optim.base_rl=0.1"]) == 2
    err = capsys.readouterr().err
    assert "optim.base_rl" in err and "base_lr" in err


def test_wrong_type_names_key_and_expected_type(recipe: Path, capsys) -> None:
    assert main(["pretrain", str(recipe), "train.epochs=many"]) == 2
    err = capsys.readouterr().err
    assert "train.epochs" in err and "int" in err


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "in-a-loader-worker"])
def test_corrupt_image_names_the_file(tmp_path: Path, recipe: Path, capsys, workers: int) -> None:
    bad = tmp_path / "images" / "cat" / "broken.jpg"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    overrides = [
        "data.dataset=folder",
        f"data.path={tmp_path / 'images'}",
        f"data.num_workers={workers}",
        "train.batch_size=1",
    ]
    assert main(["pretrain", str(recipe), *overrides]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: cannot read image ")  # one line, not the worker's traceback
    assert f"{bad}: cannot decode (" in error and error.endswith(")")  # the decoder's reason


def test_help_lists_commands(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("pretrain", "knn", "detect", "export", "report"))


@pytest.mark.parametrize(
    "script, command",
    [
        ("pretrain.py", "pretrain"),
        ("knn_eval.py", "knn"),
        ("linear_probe.py", "linear"),
        ("logreg_eval.py", "logreg"),
        ("few_shot.py", "fewshot"),
        ("export_checkpoint.py", "export"),
    ],
)
def test_tools_scripts_are_the_commands(script: str, command: str) -> None:
    """``python tools/<script> --help`` from a checkout, as the README shows it."""
    tool = Path(__file__).resolve().parents[1] / "tools" / script
    run = subprocess.run([sys.executable, str(tool), "--help"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"usage: sslvision {command} ")
