"""The linear probe end to end on small generated folders: separable classes reach 100%, a sweep
equals its heads trained one by one, val is read only after the choice, the cached and the
online path agree, a stopped run resumes bitwise, bad input exits 2 with a message."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from sslvision.cli import main
from sslvision.data.image_folder import ImageFolderDataset
from sslvision.engine.checkpoint import read_state_file
from sslvision.eval import linear_eval
from sslvision.eval.encoders import load_encoder
from sslvision.eval.linear_eval import run_linear
from sslvision.eval.linear_protocols import PRESETS, get_protocol

SIZE = 16
SWEEP = [
    "sweep_lrs=[0.01, 1.0]",
    "sweep_weight_decays=[0.0, 0.001]",
    "sweep_batch_norm=[false, true]",
]
FAST = ["epochs=4", "batch_size=8", "log_every=2", "lr=0.5", *SWEEP]


@pytest.fixture
def splits(tmp_path: Path, colour_folder) -> tuple[str, str]:
    train = colour_folder(tmp_path / "data" / "train", per_class=12, size=SIZE)
    val = colour_folder(tmp_path / "data" / "val", per_class=4, size=SIZE)
    return str(train), str(val)


def _encoder():
    return load_encoder("random", small_stem=True, image_size=SIZE)


def _probe(splits, run_dir: Path, settings=FAST, protocol="fast", **options) -> dict:
    options.setdefault("num_workers", 0)
    options.setdefault("progress", False)
    return run_linear(
        _encoder(),
        *splits,
        protocol=get_protocol(protocol, settings),
        run_dir=run_dir,
        **options,
    )


def _heads(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_state_file(run_dir / "checkpoints" / "last.pt")["model"]


def test_separable_classes_reach_100_percent_on_val(splits, tmp_path: Path) -> None:
    record = _probe(splits, tmp_path / "run")
    assert record["status"] == "finished"
    assert record["linear_top1"] == 1.0 and record["linear_top5"] == 1.0
    assert record["num_fit"] + record["num_heldout"] == 36 and record["num_val"] == 12
    assert record["selected_on"].startswith("heldout")
    assert record["protocol"] == "fast" and record["protocol_epochs"] == 4


def test_a_sweep_equals_its_heads_trained_one_by_one(splits, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    sweep = _probe(splits, tmp_path / "sweep", sweep=True, cache_dir=cache)
    assert sweep["num_heads"] == 8 and len(sweep["linear_heldout_top1"]) == 8
    together = _heads(tmp_path / "sweep")
    grid = [(lr, wd, bn) for lr in (0.01, 1.0) for wd in (0.0, 0.001) for bn in (False, True)]
    for index, (lr, wd, bn) in enumerate(grid):
        alone_dir = tmp_path / f"alone{index}"
        one = [f"sweep_lrs=[{lr}]", f"sweep_weight_decays=[{wd}]", f"sweep_batch_norm=[{bn}]"]
        _probe(splits, alone_dir, [*FAST, *one], sweep=True, cache_dir=cache)
        for name, tensor in _heads(alone_dir).items():
            assert torch.equal(tensor, together[name.replace("heads.0.", f"heads.{index}.")])


def test_val_is_read_only_after_the_heads_are_chosen(
    splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    decode = ImageFolderDataset.__getitem__

    def instrumented_decode(self, index):
        events.append("val image" if "/val/" in str(self.root) + "/" else "train image")
        return decode(self, index)

    accuracy = linear_eval._accuracy

    def instrumented_accuracy(heads, features, labels, device):
        events.append(f"score {len(labels)}")
        return accuracy(heads, features, labels, device)

    monkeypatch.setattr(ImageFolderDataset, "__getitem__", instrumented_decode)
    monkeypatch.setattr(linear_eval, "_accuracy", instrumented_accuracy)
    record = _probe(splits, tmp_path / "run", protocol="fast", sweep=True)
    first_val = events.index("val image")
    assert "score 3" in events[:first_val]  # the 10% held out of each class (3 x 1) first
    assert events[first_val:].count("score 12") == 1  # then val, once
    assert "train image" not in events[first_val:]
    assert record["linear_head"] in record["linear_heldout_top1"]


def test_select_on_val_is_labelled_as_the_papers_did(splits, tmp_path: Path) -> None:
    record = _probe(splits, tmp_path / "run", sweep=True, select_on="val")
    assert record["selected_on"].startswith("val (as the papers did")
    assert record["num_heldout"] == 0 and len(record["linear_val_top1_all"]) == 8


def test_cached_and_online_features_without_augmentation_agree_exactly(
    splits, tmp_path: Path
) -> None:
    _probe(splits, tmp_path / "cached", sweep=True)
    _probe(splits, tmp_path / "online", [*FAST, "features=online"], sweep=True)
    cached, online = _heads(tmp_path / "cached"), _heads(tmp_path / "online")
    assert cached.keys() == online.keys()
    for name in cached:
        assert torch.equal(cached[name], online[name]), name


@pytest.mark.parametrize("protocol", ["mocov2-small", "mae-small"])
def test_the_augmented_paper_protocols_train_through_the_frozen_backbone(
    splits, tmp_path: Path, protocol: str
) -> None:
    settings = ["epochs=2", "batch_size=8", "precision=bf16"]
    record = _probe(splits, tmp_path / "run", settings, protocol=protocol)
    assert record["status"] == "finished" and record["steps"] == 2 * (33 // 8)
    assert 0.0 <= record["linear_top1"] <= 1.0
    paper = PRESETS[protocol.removesuffix("-small")]
    assert record["protocol_lr"] == paper.lr and record["protocol_optimizer"] == paper.optimizer
    heads = _heads(tmp_path / "run")
    assert ("heads.0.0.running_mean" in heads) == paper.batch_norm  # MAE's BN before the head


def test_a_stopped_probe_resumes_bitwise(splits, tmp_path: Path, stop_at) -> None:
    settings = ["epochs=3", "batch_size=8", "log_every=2", "features=online", "augment=true"]
    _probe(splits, tmp_path / "straight", settings, protocol="mocov3-small")
    stopped = _probe(splits, tmp_path / "run", settings, "mocov3-small", callbacks=[stop_at(5)])
    assert stopped["status"] == "preempted" and stopped["steps"] == 5
    assert "linear_top1" not in stopped
    resumed = _probe(splits, tmp_path / "run", settings, "mocov3-small", resume="auto")
    straight = _heads(tmp_path / "straight")
    for name, tensor in _heads(tmp_path / "run").items():
        assert torch.equal(tensor, straight[name]), name
    assert resumed["status"] == "finished" and resumed["steps"] == 12


def test_a_resume_with_other_settings_is_refused(splits, tmp_path: Path) -> None:
    _probe(splits, tmp_path / "run")
    with pytest.raises(Exception, match="cannot resume"):
        _probe(splits, tmp_path / "run", [*FAST[:-3], "lr=0.1"], resume="auto")


def test_every_preset_is_offered_by_the_command() -> None:
    from sslvision.eval.commands.linear import PROTOCOLS

    assert tuple(PRESETS) == PROTOCOLS
    small = PRESETS["mae-small"]
    assert small.batch_size == 256 and small.crop_ratio == 1.0 and small.image_size == 0
    paper = dataclasses.asdict(PRESETS["mae"])
    assert paper["batch_size"] == 16384 and paper["batch_norm"] and paper["optimizer"] == "lars"


def test_the_command_appends_a_linear_row_that_report_shows(splits, tmp_path, capsys) -> None:
    csv = tmp_path / "results.csv"
    argv = ["linear", "random", "--small-stem", "--image-size", str(SIZE), "--num-workers", "0"]
    argv += ["--train-data", splits[0], "--val-data", splits[1], "--results-csv", str(csv)]
    argv += ["--run-dir", str(tmp_path / "run"), "--set", *FAST]
    assert main(argv) == 0
    assert "linear (fast" in capsys.readouterr().out
    assert main(["report", str(csv)]) == 0
    assert "linear_top1" in capsys.readouterr().out


def _bad_argv(splits, tmp_path: Path) -> list[str]:
    argv = ["linear", "random", "--small-stem", "--image-size", str(SIZE), "--num-workers", "0"]
    argv += ["--train-data", splits[0], "--val-data", splits[1], "--run-dir", str(tmp_path / "r")]
    return [*argv, "--results-csv", str(tmp_path / "results.csv")]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["epochz=3"], "unknown linear-probe setting 'epochz'"),
        (["schedule=linear"], "Valid choices: cosine, step"),
        (["batch_size=500"], "larger than the"),
        (["augment=true"], "cannot augment"),
    ],
)
def test_bad_settings_exit_2_with_a_message(splits, tmp_path, capsys, settings, message) -> None:
    assert main([*_bad_argv(splits, tmp_path), "--set", *settings]) == 2
    assert message in capsys.readouterr().err


def test_an_unknown_protocol_exits_2_naming_the_choices(splits, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*_bad_argv(splits, tmp_path), "--protocol", "nope"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_mismatched_classes_and_an_empty_split_exit_2(tmp_path, capsys, colour_folder) -> None:
    train = colour_folder(tmp_path / "train", ["apple", "banana"], per_class=6, size=SIZE)
    val = colour_folder(tmp_path / "val", ["apple", "cherry"], per_class=2, size=SIZE)
    (tmp_path / "empty" / "apple").mkdir(parents=True)
    argv = ["linear", "random", "--image-size", str(SIZE), "--num-workers", "0"]
    argv += ["--run-dir", str(tmp_path / "r"), "--results-csv", str(tmp_path / "x.csv")]
    argv += ["--set", "batch_size=4", "epochs=1"]
    assert main([*argv, "--train-data", str(train), "--val-data", str(val)]) == 2
    assert "val classes missing from the training split: cherry" in capsys.readouterr().err
    assert main([*argv, "--train-data", str(tmp_path / "empty"), "--val-data", str(val)]) == 2
    assert "error:" in capsys.readouterr().err
