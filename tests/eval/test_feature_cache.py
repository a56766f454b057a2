"""The feature cache: extracted once per encoder and file list, reused, invalidated, repaired."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

import sslvision.data.image_folder as image_folder
import sslvision.eval.feature_cache as feature_cache
from sslvision.cli import main
from sslvision.data.decode import read_image_uint8
from sslvision.errors import ConfigError
from sslvision.eval.encoders import load_encoder
from sslvision.eval.feature_cache import FeatureStore
from sslvision.eval.knn_eval import run_knn

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

CLASSES = ("apple", "banana")


@pytest.fixture
def data(tmp_path: Path, colour_folder) -> dict[str, Path]:
    """train/ with 3 and val/ with 2 flat-colour 16 px PNGs of each of two classes."""
    return {
        "train": colour_folder(tmp_path / "train", list(CLASSES), per_class=3),
        "val": colour_folder(tmp_path / "val", list(CLASSES), per_class=2),
        "cache": tmp_path / "cache",
    }


def _export(path: Path, seed: int) -> Path:
    """An exported backbone file (library key names) of a seeded random small-stem ResNet-18."""
    backbone = load_encoder("random", small_stem=True, seed=seed).backbone
    torch.save({k.removeprefix("model."): v for k, v in backbone.state_dict().items()}, path)
    return path


def _store(data: dict[str, Path], encoder: str | Path = "random", **kwargs) -> FeatureStore:
    kwargs.setdefault("cache_dir", data["cache"])
    loaded = load_encoder(str(encoder), backbone="resnet18", small_stem=True, image_size=16)
    return FeatureStore(
        loaded, str(data["train"]), str(data["val"]), num_workers=0, batch_size=4, **kwargs
    )


def _forbid_extraction(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("features were extracted")

    monkeypatch.setattr(feature_cache, "extract_features", fail)
    monkeypatch.setattr(feature_cache, "estimate_bn_statistics", fail)
    monkeypatch.setattr(image_folder, "read_image_uint8", fail)


def test_a_second_store_reuses_the_features_without_extracting(data, monkeypatch, capsys):
    first = _store(data)
    extracted = {split: first.features(split) for split in ("train", "val")}
    assert not any(s.reused for s in extracted.values())
    assert "features: cached train in" in capsys.readouterr().err
    manifest = json.loads((extracted["train"].path / "manifest.json").read_text())
    assert manifest["splits"]["val"]["num_images"] == 4 and manifest["encoder"] == "random"

    _forbid_extraction(monkeypatch)
    second = _store(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # copy-on-write maps: no read-only tensor warning
        for split, original in extracted.items():
            reused = second.features(split)
            assert reused.reused and reused.path == original.path
            assert torch.equal(reused.features, original.features)
            assert torch.equal(reused.labels, original.labels)
    assert "features: reusing train cache" in capsys.readouterr().err
    assert second.bn_statistics == first.bn_statistics == "estimated on train_data (6 images)"


def test_changed_weights_in_the_checkpoint_file_are_a_miss(data, tmp_path):
    checkpoint = _export(tmp_path / "encoder.pt", seed=0)
    before = _store(data, checkpoint).features("train")
    _export(checkpoint, seed=1)  # the same path, other weights
    after = _store(data, checkpoint).features("train")
    assert not after.reused and after.path != before.path
    assert not torch.equal(after.features, before.features)
    _export(checkpoint, seed=0)
    assert _store(data, checkpoint).features("train").reused


@pytest.mark.parametrize("change", ["add", "remove", "rewrite"])
def test_a_changed_train_file_list_is_a_miss_for_train_only(data, tmp_path, change):
    checkpoint = _export(
        tmp_path / "encoder.pt", seed=0
    )  # trained BN: val does not depend on train
    first = _store(data, checkpoint)
    first.features("train"), first.features("val")
    image = data["train"] / "apple" / "0.png"
    if change == "add":
        shutil.copy(image, image.with_name("9.png"))
    elif change == "remove":
        image.unlink()
    else:
        write_png(torch.zeros(3, 12, 12, dtype=torch.uint8), str(image))
    second = _store(data, checkpoint)
    train = second.features("train")
    assert not train.reused and len(train.labels) == len(second.train_set)
    assert second.features("val").reused
    assert _store(data, checkpoint).features("train").reused  # the new list, now cached


def test_bn_statistics_estimated_on_train_make_a_train_change_a_miss_for_val_too(data):
    first = _store(data)
    first.features("val")
    shutil.copy(data["train"] / "apple" / "0.png", data["train"] / "apple" / "9.png")
    second = _store(data)
    assert not second.features("val").reused
    assert second.bn_statistics == "estimated on train_data (7 images)"


def test_val_is_not_decoded_before_it_is_asked_for(data, monkeypatch):
    decoded: list[str] = []

    def recording(path, size):
        decoded.append(str(path))
        return read_image_uint8(path, size)

    monkeypatch.setattr(image_folder, "read_image_uint8", recording)
    store = _store(data)
    store.features("train")
    assert decoded and not [path for path in decoded if str(data["val"]) in path]
    store.features("val")
    assert [path for path in decoded if str(data["val"]) in path]


@pytest.mark.parametrize(("crop_ratio", "load", "offset"), [(0.875, 18, 1), (0.5, 32, 8)])
def test_crop_ratio_loads_larger_and_crops_the_centre(data, crop_ratio, load, offset):
    store = _store(data, crop_ratio=crop_ratio)
    image, label = store.train_set[0]
    path = data["train"] / "apple" / "0.png"
    expected = read_image_uint8(path, load)[:, offset : offset + 16, offset : offset + 16]
    assert torch.equal(image, expected) and label == 0
    assert store.train_set.classes == list(CLASSES) and store.num_classes == 2
    assert store.features("train").path != _store(data).features("train").path
    with pytest.raises(ConfigError, match="crop_ratio"):
        _store(data, crop_ratio=1.5)


def test_knn_with_the_cache_gives_the_record_of_knn_without(data):
    def knn(cache_dir):
        encoder = load_encoder("random", small_stem=True, image_size=16)
        record = run_knn(
            encoder,
            str(data["train"]),
            str(data["val"]),
            ks=(3,),
            num_workers=0,
            cache_dir=cache_dir,
        )
        return record.pop("seconds"), record.pop("feature_cache"), record

    _, uncached_path, uncached = knn(None)
    _, written_path, written = knn(data["cache"])
    _, reused_path, reused = knn(data["cache"])
    assert uncached == written == reused
    assert uncached_path == "" and written_path == reused_path != ""


@pytest.mark.parametrize("damage", ["train.features.npy", "train.labels.npy", "manifest.json"])
def test_a_damaged_entry_is_extracted_again(data, damage):
    original = _store(data).features("train")
    (original.path / damage).write_bytes(b"not what was written")
    repaired = _store(data).features("train")
    assert not repaired.reused and torch.equal(repaired.features, original.features)
    assert _store(data).features("train").reused


def test_without_a_cache_dir_nothing_is_written(data):
    features = _store(data, cache_dir=None).features("val")
    assert not features.reused and features.path is None and not data["cache"].exists()


def test_the_knn_command_caches_beside_the_results_table(data, tmp_path, capsys):
    results = tmp_path / "out" / "results.csv"
    argv = ["knn", "random", "--small-stem", "--image-size", "16", "--k", "3", "--num-workers", "0"]
    argv += ["--train-data", str(data["train"]), "--val-data", str(data["val"])]
    argv += ["--results-csv", str(results)]
    assert main(argv) == 0
    assert main(argv) == 0
    assert "features: reusing val cache " + str(tmp_path / "out" / "feature_cache") in (
        capsys.readouterr().err
    )
    assert main([*argv, "--no-cache"]) == 0
    assert "features:" not in capsys.readouterr().err
    assert main([*argv, "--cache-dir", str(data["cache"])]) == 0
    assert "features: cached val in " + str(data["cache"]) in capsys.readouterr().err
