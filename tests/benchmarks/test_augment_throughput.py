"""benchmarks/augment_throughput.py: both pipelines make the recipe's views, and the
torchvision reference is the same recipe (view count and shapes) applied per sample."""

from __future__ import annotations

import json

import torch

from sslvision.augment.recipes import swav_views


def test_a_small_run_reports_every_recipe_and_op(load_benchmark, capsys) -> None:
    bench = load_benchmark("augment_throughput")
    argv = ["--sizes", "32", "--batch-size", "4", "--batches", "1", "--rounds", "1"]
    assert bench.main([*argv, "--workers", "0", "--device", "cpu", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = record["throughput"]
    assert [row["recipe"] for row in rows] == ["simclr", "multicrop", "coordinate"]
    assert all(
        row[key] > 0 for row in rows for key in ("sslvision", "sslvision_before", "torchvision")
    )
    ops = record["op_ms"][0]["ms"]
    assert {"colour jitter", "RandomGaussianBlur", "RandomGaussianBlur, kornia convolution"} <= set(
        ops
    )


def test_the_reference_makes_every_view_of_the_recipe_per_sample(load_benchmark) -> None:
    bench = load_benchmark("augment_throughput")
    pool = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    views = bench.PerSampleViews(pool, swav_views(32), length=3)[1]
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 14, 14)] * 6
    assert all(v.dtype == torch.float32 for v in views)
