"""Evaluators label val by the training split's class names, not by each folder's own order."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslvision.cli import main
from sslvision.eval.encoders import load_encoder
from sslvision.eval.knn_eval import run_knn


def _top1(train: Path, val: Path) -> float:
    record = run_knn(load_encoder("random", image_size=16), str(train), str(val), ks=(3,))
    return record["knn_top1_k3"]


def test_a_val_split_without_one_class_is_labelled_by_name(tmp_path: Path, colour_folder) -> None:
    train = colour_folder(tmp_path / "train", ["apple", "banana", "cherry"])
    val = colour_folder(tmp_path / "val", ["banana", "cherry"])  # alone, banana would be class 0
    with pytest.warns(UserWarning, match="absent from val: apple"):
        assert _top1(train, val) == 1.0


def test_a_val_class_that_train_lacks_is_an_error_naming_it(
    tmp_path: Path, capsys, colour_folder
) -> None:
    train = colour_folder(tmp_path / "train", ["apple", "banana"])
    val = colour_folder(tmp_path / "val", ["apple", "cherry"])  # a renamed or extra class
    argv = ["knn", "random", "--image-size", "16", "--train-data", str(train)]
    assert main([*argv, "--val-data", str(val), "--num-workers", "0"]) == 2
    assert "val classes missing from the training split: cherry" in capsys.readouterr().err
