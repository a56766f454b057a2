from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from sslvision.data.cifar import CIFARDataset
from sslvision.data.spec import dataset_from_spec
from sslvision.errors import ConfigError, DataError

_IMAGES_PER_FILE = 3


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_pickle(path: Path, content: dict) -> None:
    path.write_bytes(pickle.dumps(content))


def _fake_cifar(root: Path, monkeypatch: pytest.MonkeyPatch, num_classes: int) -> dict:
    """Write torchvision's python layout with tiny batches; point its md5 lists at them.

    Returns the raw rows (N, 3072) and labels written for each split.
    """
    torchvision_class = {10: CIFAR10, 100: CIFAR100}[num_classes]
    label_key = "labels" if num_classes == 10 else "fine_labels"
    directory = root / torchvision_class.base_folder
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written: dict[str, tuple[np.ndarray, list[int]]] = {}
    patched_lists = {}
    for split, file_list in (
        ("train", torchvision_class.train_list),
        ("test", torchvision_class.test_list),
    ):
        rows, labels, patched = [], [], []
        for file_name, _ in file_list:
            data = rng.integers(0, 256, (_IMAGES_PER_FILE, 3072), dtype=np.uint8)
            targets = rng.integers(0, num_classes, _IMAGES_PER_FILE).tolist()
            _write_pickle(directory / file_name, {"data": data, label_key: targets})
            rows.append(data)
            labels.extend(targets)
            patched.append([file_name, _md5(directory / file_name)])
        written[split] = (np.concatenate(rows), labels)
        patched_lists[split] = patched
    meta = torchvision_class.meta
    names = [f"class_{index}" for index in range(num_classes)]
    _write_pickle(directory / meta["filename"], {meta["key"]: names})
    monkeypatch.setattr(torchvision_class, "train_list", patched_lists["train"])
    monkeypatch.setattr(torchvision_class, "test_list", patched_lists["test"])
    patched_meta = {**meta, "md5": _md5(directory / meta["filename"])}
    monkeypatch.setattr(torchvision_class, "meta", patched_meta)
    return written


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("train", [True, False])
def test_reads_python_layout_into_one_uint8_tensor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, num_classes: int, train: bool
) -> None:
    written = _fake_cifar(tmp_path, monkeypatch, num_classes)
    rows, labels = written["train" if train else "test"]
    dataset = CIFARDataset(tmp_path, train=train, num_classes=num_classes)
    assert dataset.images.dtype == torch.uint8 and dataset.images.is_contiguous()
    assert dataset.images.shape == (len(labels), 3, 32, 32)
    assert torch.equal(dataset.images.flatten(1), torch.from_numpy(rows))
    assert dataset.targets == labels and dataset.num_classes == num_classes
    assert dataset.classes[:2] == ["class_0", "class_1"]
    image, label = dataset[1]
    assert torch.equal(image, dataset.images[1]) and label == labels[1]


def test_resizes_once_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cifar(tmp_path, monkeypatch, 10)
    dataset = CIFARDataset(tmp_path, train=False, image_size=16)
    assert dataset.images.shape == (_IMAGES_PER_FILE, 3, 16, 16)
    assert dataset.images.dtype == torch.uint8 and dataset.images.is_contiguous()


def test_missing_files_name_the_directory_and_the_option(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar-10-batches-py.*data\.download=true"):
        CIFARDataset(tmp_path)


def test_corrupt_files_name_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cifar(tmp_path, monkeypatch, 100)
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"truncated")
    with pytest.raises(DataError, match="cifar-100-python are missing or fail their md5"):
        CIFARDataset(tmp_path, num_classes=100)


def test_rejects_other_class_counts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be 10 or 100, got 20"):
        CIFARDataset(tmp_path, num_classes=20)  # type: ignore[arg-type]


@pytest.mark.parametrize("split", ["train", "val"])
def test_knn_spec_reads_the_split_from_the_cifar_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: str
) -> None:
    """``sslvision knn --train-data cifar10:ROOT --val-data cifar10:ROOT``: train and test split."""
    written = _fake_cifar(tmp_path, monkeypatch, 10)
    dataset = dataset_from_spec(f"cifar10:{tmp_path}", split, image_size=32)
    rows, labels = written["train" if split == "train" else "test"]
    assert torch.equal(dataset.images.flatten(1), torch.from_numpy(rows))
    assert dataset.targets == labels
