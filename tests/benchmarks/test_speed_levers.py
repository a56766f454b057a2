"""benchmarks/speed_levers.py on the CPU: every lever's run trains and gets a rate and a ratio,
the optimiser steps are timed, and the transfer check says it needs CUDA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


def test_every_lever_is_measured_in_one_record(load_benchmark, capsys) -> None:
    levers = load_benchmark("speed_levers")
    argv = ["--recipe", "demo", "--batch-size", "4", "--steps", "3", "--log-every", "1"]
    argv += ["--workers", "1", "--optim-repeats", "2", "--device", "cpu", "--json"]
    assert levers.main(argv) == 0
    out = capsys.readouterr().out
    record = json.loads(out.strip().splitlines()[-1])
    assert record["benchmark"] == "speed_levers" and record["method"] == "simclr"
    assert record["timed_steps"] == 2
    assert record["baseline"]["images_per_s"] > 0
    assert set(record["levers"]) == {"bf16", "channels_last", "workers"}
    for lever in record["levers"].values():
        assert lever["images_per_s"] > 0 and lever["ratio"] > 0
        assert len(lever["rounds_images_per_s"]) == 1
    assert record["levers"]["bf16"]["overrides"] == ["train.precision=no"]
    optimizer = record["optimizer"]
    assert optimizer["parameters"] > 0 and optimizer["tensors"] > 0
    sgd, adamw = optimizer["sgd"], optimizer["adamw"]
    assert all(sgd[key] > 0 for key in ("foreach_ms", "for_loop_ms", "ratio"))
    assert all(adamw[key] > 0 for key in ("fused_ms", "foreach_ms", "for_loop_ms"))
    assert adamw["ratio_over_foreach"] > 0 and adamw["ratio_over_for_loop"] > 0
    assert record["transfer"] == {"skipped": levers.TRANSFER_NEEDS_CUDA}
    assert "needs CUDA" in out and "baseline (all on)" in out


def test_compile_is_a_lever_switched_on_and_no_workers_drops_that_lever(load_benchmark) -> None:
    levers = load_benchmark("speed_levers")
    runs = levers.variants(levers.parse_args(["--compile"]))
    assert [run.lever for run in runs] == ["", "bf16", "channels_last", "workers", "compile"]
    assert runs[-1].lever_on and runs[-1].overrides == ("train.compile=true",)
    assert "workers" not in [
        run.lever for run in levers.variants(levers.parse_args(["--workers", "0"]))
    ]
    rates = {run.name: [10.0] for run in runs} | {"baseline": [20.0]}
    record = levers.lever_records(levers.parse_args(["--compile"]), rates)
    assert record["levers"]["bf16"]["ratio"] == 2.0  # off in the run: baseline / run
    assert record["levers"]["compile"]["ratio"] == 0.5  # on in the run: run / baseline


def test_the_transfer_batch_has_the_recipe_shape(load_benchmark, tmp_path: Path) -> None:
    levers = load_benchmark("speed_levers")
    squares = levers.synthetic_recipe("simclr", "imagenette", tmp_path, 0, ["train.batch_size=8"])
    assert levers.batch_shapes(squares) == [(8, 3, 64, 64)]
    crops = levers.synthetic_recipe("swav", "imagenet100", tmp_path, 0, ["train.batch_size=8"])
    assert levers.batch_shapes(crops) == [(8, 2, 3, 224, 224), (8, 6, 3, 96, 96)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the pinned copy needs CUDA")
def test_on_cuda_the_pinned_copy_is_timed(load_benchmark, tmp_path: Path) -> None:
    levers = load_benchmark("speed_levers")
    cfg = levers.synthetic_recipe("simclr", "demo", tmp_path, 0, ["train.batch_size=8"])
    moved = levers.transfer(cfg, torch.device("cuda"), repeats=3)
    assert moved["bytes"] == 8 * 3 * 32 * 32 and moved["pinned_ms"] > 0 and moved["ratio"] > 0
