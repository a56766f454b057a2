"""Figures from a results table and from runs' metrics.csv, through the functions and the CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from torchvision.io import decode_image

from sslvision.cli import main
from sslvision.errors import PlotError
from sslvision.eval.plots import plot_curves, plot_results

TABLE = pd.DataFrame(
    {
        "evaluator": ["knn", "knn", "knn"],
        "encoder": ["random", "runs/a/last.pt", "runs/b/last.pt"],
        "label": ["random init", None, "SimCLR"],
        "knn_top1_k20": [0.366, 0.4, None],
    }
)


def _png_size(path: Path) -> tuple[int, int]:
    image = decode_image(str(path))  # a real PNG, or this raises
    return image.shape[2], image.shape[1]


def test_results_become_one_bar_per_row_with_a_value(tmp_path: Path) -> None:
    out = plot_results(TABLE, "knn_top1_k20", tmp_path / "figures" / "knn.png")
    assert _png_size(out) == (7 * 120, round((0.45 * 2 + 1.2) * 120))  # the row without a value
    with pytest.raises(PlotError, match=r"no column 'linear_top1'.*choices: knn_top1_k20"):
        plot_results(TABLE, "linear_top1", tmp_path / "x.png")
    with pytest.raises(PlotError, match="no row of the results has a value for 'knn_top1_k20'"):
        plot_results(TABLE.iloc[2:], "knn_top1_k20", tmp_path / "x.png")


def _run(directory: Path, rows: str) -> Path:
    directory.mkdir(parents=True)
    header = "step,epoch,loss,lr,images_per_s,knn_top1\n"
    (directory / "metrics.csv").write_text(header + rows)
    return directory


def test_curves_draw_each_run_and_skip_steps_without_a_probe(tmp_path: Path) -> None:
    first = _run(tmp_path / "simclr", "10,0,5.1,0.1,90,\n20,0,4.8,0.1,91,0.31\n")
    second = _run(tmp_path / "mocov2", "10,0,7.2,0.1,80,\n20,0,7.0,0.1,82,0.29\n")
    out = plot_curves([first, second], ["loss", "knn_top1"], tmp_path / "curves.png")
    assert _png_size(out) == (7 * 120, round(2 * 2.6 * 120))
    with pytest.raises(PlotError, match="has no column 'acc'; it has step, epoch, loss"):
        plot_curves([first], ["acc"], tmp_path / "x.png")
    with pytest.raises(PlotError, match=r"no metrics\.csv in .*nowhere; pass a run"):
        plot_curves([tmp_path / "nowhere"], ["loss"], tmp_path / "x.png")


def test_cli_report_plot_and_curves(tmp_path: Path, capsys) -> None:
    csv = tmp_path / "results.csv"
    TABLE.to_csv(csv, index=False)
    assert main(["report", str(csv), "--plot", str(tmp_path / "knn.png")]) == 0
    assert capsys.readouterr().out.strip().endswith(f"plot: {tmp_path / 'knn.png'}")
    assert (tmp_path / "knn.png").is_file()
    assert main(["report", str(csv), "--plot", str(tmp_path / "x.png"), "--metric", "ap50"]) == 2
    assert "error: no column 'ap50'" in capsys.readouterr().err

    run = _run(tmp_path / "run", "10,0,5.1,0.1,90,0.3\n")
    out = tmp_path / "curves.png"
    assert main(["curves", str(run), "--columns", "loss", "lr", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"plot: {out}" and out.is_file()
