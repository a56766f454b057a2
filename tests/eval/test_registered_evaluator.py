"""An evaluator registered outside the package is a command, and report shows its metric."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from sslvision.cli import main
from sslvision.eval.evaluator import Evaluator, metric_columns
from sslvision.registry import EVALUATORS


@pytest.fixture
def toy_evaluator(scratch_registries: None) -> None:
    @EVALUATORS.register("toy")
    class ToyEvaluator(Evaluator):
        help = "a constant score"
        description = "Scores every encoder 0.5."
        metric_prefix = "toy_"

        @staticmethod
        def add_arguments(parser: argparse.ArgumentParser) -> None:
            parser.add_argument("encoder", help="any name")

        @staticmethod
        def run(args: argparse.Namespace) -> dict[str, Any]:
            return {"evaluator": "toy", "encoder": args.encoder, "toy_score": 0.5, "seconds": 1}


def test_a_registered_evaluator_is_a_command_and_report_shows_its_metric(
    toy_evaluator: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results.csv"
    assert main(["toy", "random", "--label", "constant", "--results-csv", str(results)]) == 0
    assert metric_columns(["encoder", "toy_score", "seconds"]) == ["toy_score"]
    capsys.readouterr()
    assert main(["report", str(results)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["label", "evaluator", "encoder", "toy_score"]
    assert row.split() == ["constant", "toy", "random", "50.0"]
