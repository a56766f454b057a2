"""benchmarks/gpu_profile.py: on a machine without CUDA it says so and exits 0, writing nothing;
its synthetic photographs are real JPEGs of both orientations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sslvision.data.decode import read_image_rgb


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the path of a machine without CUDA")
def test_without_cuda_it_says_so_and_exits_0(load_benchmark, tmp_path: Path, capsys) -> None:
    profile = load_benchmark("gpu_profile")
    assert profile.main(["--out", str(tmp_path / "profile.json")]) == 0
    assert "no CUDA device" in capsys.readouterr().out
    assert not (tmp_path / "profile.json").exists()


def test_the_synthetic_photographs_are_jpegs_of_both_orientations(load_benchmark, tmp_path) -> None:
    load_benchmark("gpu_profile").write_photos(tmp_path, 2)
    shapes = [read_image_rgb(path).shape for path in sorted((tmp_path / "synthetic").iterdir())]
    assert shapes == [(3, 500, 375), (3, 375, 500)]


def test_the_cpu_smoke_mode_trains_and_writes_one_record(load_benchmark, tmp_path: Path) -> None:
    profile = load_benchmark("gpu_profile")
    argv = ["--device", "cpu", "--recipe", "demo", "--methods", "simclr", "--compile"]
    argv += ["--steps", "2", "--log-every", "1", "--batch-size", "4", "--workers", "0"]
    assert profile.main([*argv, "--out", str(tmp_path / "profile.json")]) == 0
    record = json.loads((tmp_path / "profile.json").read_text())
    assert [(run["method"], run["decode"]) for run in record["runs"]] == [
        ("simclr", "workers"),
        ("simclr", "device"),
    ]
    assert all(run["samples_per_s"] > 0 and run["flops_per_sample"] > 0 for run in record["runs"])
    assert record["input_path_images_per_s_decode_workers"] > 0
    assert record["input_path_images_per_s_decode_device"] > 0
    assert record["decode_gap_levels"] == {"max": 0.0, "mean": 0.0}  # the CPU against itself
