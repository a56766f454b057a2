"""Tests of result records: CSV appends that grow columns, JSON lines, flattened kNN results."""

from __future__ import annotations

import json
import math
import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sslvision.errors import DataError, PlotError
from sslvision.eval.results import append_result, flatten_knn, format_json_record, read_results


def test_appends_with_different_columns_give_the_union(tmp_path):
    csv_path = tmp_path / "nested" / "dir" / "results.csv"

    append_result({"method": "simclr", "knn_top1_k20": 0.5}, csv_path)
    append_result({"method": "byol", "linear_top1": torch.tensor(0.75)}, str(csv_path))

    table = pd.read_csv(csv_path)
    assert list(table.columns) == ["method", "knn_top1_k20", "linear_top1"]
    assert table["method"].tolist() == ["simclr", "byol"]
    assert table["knn_top1_k20"].iloc[0] == 0.5
    assert math.isnan(table["knn_top1_k20"].iloc[1])
    assert math.isnan(table["linear_top1"].iloc[0])
    assert table["linear_top1"].iloc[1] == 0.75


def test_append_leaves_no_temporary_files(tmp_path):
    csv_path = tmp_path / "results.csv"

    append_result({"a": 1}, csv_path)
    append_result({"a": 2}, csv_path)

    assert sorted(path.name for path in tmp_path.iterdir()) == [".results.csv.lock", "results.csv"]
    assert pd.read_csv(csv_path)["a"].tolist() == [1, 2]


def _append_rows(csv_path: Path, process: int, rows: int) -> None:
    for row in range(rows):
        append_result({"process": process, "row": row}, csv_path)


def test_appends_from_several_processes_at_once_lose_no_row(tmp_path):
    """Four real processes append at the same time, as a sweep's evaluation jobs do."""
    csv_path = tmp_path / "results.csv"
    fork = multiprocessing.get_context("fork")  # the children only need what is imported here
    processes = [fork.Process(target=_append_rows, args=(csv_path, p, 15)) for p in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0

    table = pd.read_csv(csv_path)
    assert sorted(zip(table["process"], table["row"], strict=True)) == [
        (p, r) for p in range(4) for r in range(15)
    ]


def test_nested_values_are_stored_as_json_text(tmp_path):
    csv_path = tmp_path / "results.csv"

    append_result({"ks": [20, 200], "checkpoint": Path("runs/a.pt")}, csv_path)

    row = pd.read_csv(csv_path).iloc[0]
    assert json.loads(row["ks"]) == [20, 200]
    assert row["checkpoint"] == "runs/a.pt"


def test_empty_record_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="at least one field"):
        append_result({}, tmp_path / "results.csv")


def test_json_line_round_trips():
    record = {
        "method": "moco",
        "checkpoint": Path("runs/moco/last.pt"),
        "knn_top1_k20": torch.tensor(0.625),
        "epoch": np.int64(100),
        "lr": np.float32(0.5),
        "embedding": torch.tensor([1.0, 2.0]),
        "loss": float("nan"),
        "knn": {20: {"top1": 0.5}},
    }

    line = format_json_record(record)

    assert "\n" not in line
    assert json.loads(line) == {
        "method": "moco",
        "checkpoint": "runs/moco/last.pt",
        "knn_top1_k20": 0.625,
        "epoch": 100,
        "lr": 0.5,
        "embedding": [1.0, 2.0],
        "loss": None,
        "knn": {"20": {"top1": 0.5}},
    }
    assert list(json.loads(line)) == sorted(record)


def test_values_json_cannot_hold_are_rejected_by_name():
    with pytest.raises(TypeError, match="field 'model' has a value of type object"):
        format_json_record({"model": object()})


def test_flatten_knn_names_metric_and_k():
    result = {20: {"top1": 0.5, "top5": 0.9}, 200: {"top1": 0.4, "top5": 0.8}}

    assert flatten_knn(result) == {
        "knn_top1_k20": 0.5,
        "knn_top5_k20": 0.9,
        "knn_top1_k200": 0.4,
        "knn_top5_k200": 0.8,
    }


def test_read_results_keeps_one_evaluators_rows_of_a_mixed_table(tmp_path):
    """Rows of other commands (pretrain, before it stopped writing them) have no evaluator."""
    csv_path = tmp_path / "results.csv"
    append_result({"command": "pretrain", "method": "simclr"}, csv_path)
    append_result({"evaluator": "knn", "encoder": "random", "knn_top1_k20": 0.1}, csv_path)
    append_result({"evaluator": "detection", "encoder": "random", "ap50": 0.2}, csv_path)
    assert len(read_results(csv_path)) == 3
    knn = read_results(csv_path, evaluator="knn")
    assert list(knn["encoder"]) == ["random"] and knn["knn_top1_k20"].tolist() == [0.1]
    with pytest.raises(PlotError, match=r"no rows of evaluator 'linear' .*: detection, knn"):
        read_results(csv_path, evaluator="linear")


def test_an_unreadable_table_is_named_before_a_row_is_added(tmp_path):
    csv_path = tmp_path / "results.csv"
    csv_path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(DataError, match=r"cannot read .*results\.csv as a CSV table"):
        append_result({"evaluator": "knn"}, csv_path)
    assert csv_path.read_bytes().startswith(b"\x89PNG")  # left as it was
