"""benchmarks/method_throughput.py: the conventional reference makes every view of a recipe with
the box it was cut from, and its loop trains every kind of method (multi-crop, dense, momentum)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from sslvision.augment.recipes import swav_views


def test_reference_views_carry_the_box_each_was_cut_from(load_benchmark) -> None:
    bench = load_benchmark("method_throughput")
    # red is the column: a crop's mean red says where its box lies
    columns = torch.linspace(0, 255, 64).round().byte().expand(64, 64)
    image = Image.fromarray(torch.stack([columns] * 3, dim=2).numpy())
    plain = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
    groups = [replace(group, **plain) for group in swav_views(32)]  # pixels only move
    make = bench.ReferenceViews(groups, 64, (0.0,) * 3, (1.0,) * 3)
    torch.manual_seed(0)
    views, boxes, flips = make(image)
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 14, 14)] * 6
    assert len(boxes) == len(flips) == 8
    for view, box in zip(views, boxes, strict=True):
        x1, _, x2, _ = box.tolist()
        assert 0 <= x1 < x2 <= 64
        assert abs(view[0].mean().item() * 63 - ((x1 + x2) / 2 - 0.5)) < 1.5


@pytest.mark.parametrize("method", ["swav", "pixpro"])
def test_the_reference_loop_trains_a_method(method: str, load_benchmark, tmp_path: Path) -> None:
    bench = load_benchmark("method_throughput")
    for index in range(8):
        folder = tmp_path / "data" / f"class{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{index}.png")
    argv = ["--data", str(tmp_path / "data"), "--batch-size", "4", "--workers", "0"]
    args = bench.parse_args([*argv, "--steps", "1", "--warmup-steps", "1", "--precision", "no"])
    cfg = bench.method_config(method, args, str(tmp_path / "runs"))
    measurement = bench.measure_reference(cfg, warmup_steps=1, steps=1)
    assert measurement.images == 4 and math.isfinite(measurement.images_per_s)
