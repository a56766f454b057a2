"""benchmarks/step_anatomy.py on the CPU: every phase of every method's step is timed, the
phases make up the step, and the host-sync check says it needs CUDA."""

from __future__ import annotations

import json

import pytest


def test_every_phase_of_two_methods_is_timed(load_benchmark, capsys) -> None:
    anatomy = load_benchmark("step_anatomy")
    argv = ["--recipe", "demo", "--methods", "simclr", "swav", "--batch-size", "4"]
    argv += ["--steps", "1", "--warmup-steps", "1", "--sync-steps", "1", "--workers", "0"]
    assert anatomy.main([*argv, "--device", "cpu", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [m["method"] for m in record["methods"]] == ["simclr", "swav"]
    for method in record["methods"]:
        ms = method["ms"]
        assert set(ms) == {*anatomy.PHASES, "decode (workers)"}
        assert all(ms[name] > 0 for name in ("augmentation", "forward", "backward", "optimiser"))
        assert method["step_ms"] == pytest.approx(sum(ms[name] for name in anatomy.PHASES), abs=0.1)
        assert method["slowest"] in anatomy.PHASES
        assert method["host_syncs"].startswith("n/a")
