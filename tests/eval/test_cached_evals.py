"""``sslvision logreg`` and ``sslvision fewshot`` as a user runs them: on the features that
``knn`` cached, rows in the results table that ``report`` shows beside kNN and linear."""

from __future__ import annotations

from pathlib import Path

from sslvision.cli import main
from sslvision.eval.results import read_results


def test_logreg_and_fewshot_reuse_the_knn_cache_and_report_their_columns(
    tmp_path: Path, capsys, colour_folder
) -> None:
    train = colour_folder(tmp_path / "train", per_class=12)
    val = colour_folder(tmp_path / "val", per_class=4)
    csv = tmp_path / "out" / "results.csv"
    common = ["random", "--small-stem", "--image-size", "16", "--num-workers", "0"]
    common += ["--train-data", str(train), "--val-data", str(val), "--results-csv", str(csv)]
    assert main(["knn", *common, "--k", "3"]) == 0
    capsys.readouterr()
    assert main(["logreg", *common, "--c", "0.1", "1", "10"]) == 0
    out, err = capsys.readouterr()
    assert "logistic regression (C=" in out and "top-1 100.00%" in out
    assert "features: reusing train cache" in err and "features: reusing val cache" in err
    assert main(["fewshot", *common, "--shots", "1", "5", "--draws", "2"]) == 0
    out, err = capsys.readouterr()
    assert "5-shot: kNN 100.00 ± 0.00%" in out and "features: reusing train cache" in err

    table = read_results(csv)
    assert list(table["evaluator"]) == ["knn", "logreg", "fewshot"]
    assert table["logreg_top1"].iloc[1] == 1.0
    assert main(["report", str(csv)]) == 0
    shown = capsys.readouterr().out
    for column in ("knn_top1_k3", "logreg_top1", "fewshot_knn_top1_5shot_mean"):
        assert column in shown


def test_a_val_class_train_lacks_exits_2_for_logreg(tmp_path: Path, capsys, colour_folder) -> None:
    train = colour_folder(tmp_path / "train", ["apple", "banana"], per_class=6)
    val = colour_folder(tmp_path / "val", ["apple", "cherry"], per_class=2)
    argv = ["logreg", "random", "--image-size", "16", "--num-workers", "0", "--no-cache"]
    argv += ["--train-data", str(train), "--val-data", str(val)]
    assert main([*argv, "--results-csv", str(tmp_path / "r.csv")]) == 2
    assert "val classes missing from the training split: cherry" in capsys.readouterr().err


def test_an_imagenet_subset_by_class_list_is_a_data_spec(tmp_path: Path, colour_folder) -> None:
    """``subset:LIST:DIR``: the evaluators read only the listed classes of an ImageFolder."""
    train = colour_folder(tmp_path / "train", per_class=6)
    val = colour_folder(tmp_path / "val", per_class=2)
    listing = tmp_path / "two.txt"
    listing.write_text("apple\ncherry  # a comment\n")
    argv = ["logreg", "random", "--image-size", "16", "--num-workers", "0", "--no-cache"]
    argv += ["--train-data", f"subset:{listing}:{train}", "--val-data", f"subset:{listing}:{val}"]
    assert main([*argv, "--results-csv", str(tmp_path / "r.csv"), "--c", "1"]) == 0
    record = read_results(tmp_path / "r.csv").iloc[0]
    assert record["num_train"] == 12 and record["logreg_top1"] == 1.0
