"""Figures for comparing runs: a results table as bars, training curves from ``metrics.csv``.

Both draw on a bare ``matplotlib.figure.Figure`` (no pyplot, no global backend switch), so they
work on a headless cluster node and leave a notebook's backend alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from sslvision.errors import PlotError
from sslvision.eval.evaluator import metric_columns
from sslvision.eval.results import read_table


def plot_results(table: pd.DataFrame, metric: str, out: str | Path) -> Path:
    """One horizontal bar per row of ``table``: its ``metric`` in percent, named by its label."""
    if metric not in table.columns:
        choices = ", ".join(metric_columns(table.columns))
        raise PlotError(f"no column '{metric}' in the results; choices: {choices}")
    rows = table.dropna(subset=[metric])
    if rows.empty:
        raise PlotError(f"no row of the results has a value for '{metric}'")
    labels = rows["label"].fillna("") if "label" in rows else [""] * len(rows)
    names = [label or encoder for label, encoder in zip(labels, rows["encoder"], strict=True)]
    values = 100 * rows[metric].astype(float)
    figure = Figure(figsize=(7, 0.45 * len(rows) + 1.2))
    axes = figure.subplots()
    bars = axes.barh(range(len(rows)), values, color="tab:blue")
    axes.bar_label(bars, fmt="%.2f", padding=3)
    axes.set_yticks(range(len(rows)), names)
    axes.invert_yaxis()  # the table's first row on top
    axes.set_xlabel(f"{metric} (%)")
    axes.set_xlim(0, min(100.0, values.max() * 1.15 + 1))
    return _save(figure, out)


def plot_curves(run_dirs: Sequence[str | Path], columns: Sequence[str], out: str | Path) -> Path:
    """``columns`` of each run's ``metrics.csv`` against the step, one panel per column."""
    figure = Figure(figsize=(7, 2.6 * len(columns)))
    panels = figure.subplots(len(columns), 1, sharex=True, squeeze=False)
    for run_dir in run_dirs:
        path = Path(run_dir) / "metrics.csv"
        if not path.is_file():
            raise PlotError(f"no metrics.csv in {run_dir}; pass a run directory")
        metrics = read_table(path)
        for column, axes in zip(columns, panels[:, 0], strict=True):
            if column not in metrics.columns:
                raise PlotError(
                    f"{path} has no column '{column}'; it has {', '.join(metrics.columns)}"
                )
            points = metrics[["step", column]].dropna()  # knn_top1 only at probe steps
            axes.plot(
                points["step"],
                points[column],
                marker="." if len(points) < 30 else None,
                label=Path(run_dir).name,
            )
            axes.set_ylabel(column)
    panels[0, 0].legend()
    panels[-1, 0].set_xlabel("step")
    return _save(figure, out)


def _save(figure: Figure, out: str | Path) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path
