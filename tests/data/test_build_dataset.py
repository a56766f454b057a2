from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from sslvision.data import build
from sslvision.data.build import build_dataset, bundled_class_lists, load_class_list
from sslvision.data.image_folder import ImageFolderDataset
from sslvision.data.synthetic import SyntheticShapesDataset
from sslvision.errors import ConfigError

# The test images are written with torchvision's (deprecated in 0.29) encoder.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def test_synthetic_ignores_path_and_uses_split_as_seed_stream() -> None:
    train = build_dataset("synthetic", "ignored", "train", 8, num_images=20, seed=2)
    val = build_dataset("synthetic", "ignored", "val", 8, num_images=20, seed=2)
    assert isinstance(train, SyntheticShapesDataset) and len(train) == 20
    assert train.images.shape[-1] == 8
    assert not torch.equal(train.images, val.images)


def test_folder_uses_the_split_directory_itself(tmp_path: Path) -> None:
    for name in ("n01", "n02", "n03"):
        (tmp_path / "train" / name).mkdir(parents=True)
        write_png(torch.zeros(3, 4, 4, dtype=torch.uint8), str(tmp_path / "train" / name / "a.png"))
    dataset = build_dataset(
        "folder", str(tmp_path / "train"), "train", 4, classes=["n01", "n03"], skip_corrupt=True
    )
    assert isinstance(dataset, ImageFolderDataset)
    assert dataset.classes == ["n01", "n03"] and dataset.skip_corrupt


@pytest.mark.parametrize(
    ("name", "split", "train", "num_classes"),
    [
        ("cifar10", "train", True, 10),
        ("cifar10", "val", False, 10),
        ("cifar100", "test", False, 100),
    ],
)
def test_cifar_split_and_class_count(
    monkeypatch: pytest.MonkeyPatch, name: str, split: str, train: bool, num_classes: int
) -> None:
    received = {}
    monkeypatch.setattr(build, "CIFARDataset", lambda *args, **kwargs: received.update(kwargs))
    build_dataset(name, "/data/cifar", split, 32, download=True)
    assert received == {
        "train": train,
        "num_classes": num_classes,
        "image_size": 32,
        "download": True,
    }


def test_cifar_unknown_split() -> None:
    with pytest.raises(ConfigError, match="unknown split 'dev' for cifar10"):
        build_dataset("cifar10", "/data", "dev", 32)


def test_unknown_dataset_names_the_choices() -> None:
    message = "unknown dataset 'imagenet'; choose one of synthetic, folder, cifar10, cifar100"
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_dataset("imagenet", "/data", "train", 32)


def test_bundled_imagenet100_is_the_cmc_list() -> None:
    wnids = load_class_list("imagenet100")
    assert len(wnids) == 100 and len(set(wnids)) == 100
    assert all(re.fullmatch(r"n\d{8}", wnid) for wnid in wnids)
    assert wnids[:3] == ["n02869837", "n01749939", "n02488291"] and wnids[-1] == "n02090622"


def test_bundled_imagenette() -> None:
    imagenette = [
        "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
        "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
    ]  # fmt: skip
    assert load_class_list("imagenette") == imagenette
    assert bundled_class_lists() == ["imagenet100", "imagenette"]


def test_class_list_file_with_comments(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("# my subset\nn01\n\n  n02  # the second\n")
    assert load_class_list(str(path)) == ["n01", "n02"]


def test_unknown_class_list_names_the_bundled_ones() -> None:
    with pytest.raises(ConfigError, match=r"'imagenet7'.*\(imagenet100, imagenette\)"):
        load_class_list("imagenet7")


@pytest.mark.parametrize(
    ("text", "message"), [("# nothing\n", "contains no class names"), ("a\nb\na\n", "twice: a")]
)
def test_bad_class_list_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "list.txt"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_class_list(str(path))
