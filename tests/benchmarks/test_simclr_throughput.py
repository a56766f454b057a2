"""The throughput benchmark runs end to end on a tiny folder and reports every variant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png


@pytest.fixture(scope="module")
def benchmark(load_benchmark):
    return load_benchmark("simclr_throughput")


def tiny_folder(root: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            image = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8, generator=generator)
            write_png(image, str(root / label / f"{i}.png"))
    return root


def run_tiny(benchmark, root: Path, capsys, *extra: str) -> dict:
    """The benchmark's JSON record for one step after one warm-up step on a tiny folder."""
    data = tiny_folder(root / "train")
    argv = ["--data", str(data), "--steps", "1", "--warmup-steps", "1", "--batch-size", "4"]
    # 32 px, not 16: at 16 px a ResNet-18's layer4 convolves 1x1 maps that are all padding but
    # the centre, and on CI's CPU the bf16 step left NaN in layer4.0.conv1 (not on every CPU).
    argv += ["--image-size", "32", "--workers", "0", "--json", *extra]
    assert benchmark.main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_reports_both_ratios_as_json(benchmark, tmp_path: Path, capsys) -> None:
    record = run_tiny(benchmark, tmp_path, capsys)
    assert record["precision"] == "bf16"
    for variant in ("sslvision", "reference", "reference+bf16"):
        assert record[f"{variant}_images_per_s"] > 0
    assert record["ratio"] == pytest.approx(
        record["sslvision_images_per_s"] / record["reference_images_per_s"], rel=1e-2
    )
    assert "ratio_same_precision" in record


def test_float32_runs_only_the_two_loops(benchmark, tmp_path: Path, capsys) -> None:
    record = run_tiny(benchmark, tmp_path, capsys, "--precision", "no")
    assert "reference+bf16_images_per_s" not in record
    assert "ratio_same_precision" not in record


def test_missing_data_skips_with_a_message(benchmark, tmp_path: Path, capsys) -> None:
    assert benchmark.main(["--data", str(tmp_path / "absent")]) == 0
    assert "not found" in capsys.readouterr().out
