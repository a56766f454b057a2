"""Training metrics: one CSV row per log step, mirrored to TensorBoard."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

METRIC_COLUMNS = ("step", "epoch", "loss", "lr", "images_per_s")


class MetricsLogger:
    """Writes ``metrics.csv`` and TensorBoard events in ``run_dir`` (main process only).

    On resume the CSV is rewritten from the checkpoint's rows, so steps that ran after the last
    checkpoint (and will run again) are not listed twice. A row may leave a column out (the kNN
    monitor's ``knn_top1`` exists only at probe steps); its cell stays empty.
    """

    def __init__(
        self,
        run_dir: Path,
        rows: Sequence[dict[str, float]],
        start_step: int,
        columns: Sequence[str] = METRIC_COLUMNS,
    ) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = run_dir / "metrics.csv"
        self.columns = tuple(columns)
        with self.csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        self.tensorboard = SummaryWriter(run_dir / "tensorboard", purge_step=start_step or None)

    def log(self, row: dict[str, float]) -> None:
        with self.csv_path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(row)
        for key, value in row.items():
            if key not in ("step", "epoch"):
                self.tensorboard.add_scalar(f"train/{key}", value, int(row["step"]))

    def close(self) -> None:
        self.tensorboard.close()
