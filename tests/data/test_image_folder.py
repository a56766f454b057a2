from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from sslvision.data.image_folder import ImageFolderDataset
from sslvision.data.spec import dataset_from_spec
from sslvision.errors import ConfigError, CorruptImageError, DataError

# The test images are written with torchvision's (deprecated in 0.29) encoder.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def _write_image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(torch.full((3, 6, 6), value, dtype=torch.uint8), str(path))


def _write_corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x13\x37 definitely not an image")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    _write_image(tmp_path / "n02" / "b.png", 20)
    _write_image(tmp_path / "n02" / "a.PNG", 10)
    _write_image(tmp_path / "n01" / "nested" / "c.png", 30)
    (tmp_path / "n01" / "notes.txt").write_text("not an image")
    _write_image(tmp_path / ".cache" / "d.png", 40)
    _write_image(tmp_path / "n03" / "e.png", 50)
    return tmp_path


def test_layout_gives_sorted_classes_and_samples(folder: Path) -> None:
    dataset = ImageFolderDataset(folder, image_size=4)
    assert dataset.classes == ["n01", "n02", "n03"]
    assert dataset.num_classes == 3
    assert [Path(path).name for path, _ in dataset.samples] == ["c.png", "a.PNG", "b.png", "e.png"]
    assert dataset.targets == [0, 1, 1, 2]
    image, label = dataset[1]
    assert image.dtype == torch.uint8 and image.shape == (3, 4, 4)
    assert label == 1 and int(image[0, 0, 0]) == 10


def test_class_list_keeps_only_listed_folders(folder: Path) -> None:
    dataset = ImageFolderDataset(folder, image_size=4, classes=["n03", "n01"])
    assert dataset.classes == ["n01", "n03"]
    assert dataset.targets == [0, 1]
    assert len(dataset) == 2


def test_listed_class_missing_on_disk_is_named(folder: Path) -> None:
    with pytest.raises(DataError, match=r"no folder under .*: n09"):
        ImageFolderDataset(folder, image_size=4, classes=["n01", "n09"])


def test_duplicate_listed_class_is_named(folder: Path) -> None:
    with pytest.raises(ConfigError, match="twice: n01"):
        ImageFolderDataset(folder, image_size=4, classes=["n01", "n01"])


def test_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"root .*nowhere does not exist"):
        ImageFolderDataset(tmp_path / "nowhere", image_size=4)


def test_root_without_class_folders(tmp_path: Path) -> None:
    _write_image(tmp_path / "loose.png", 0)
    with pytest.raises(DataError, match="no class sub-directories"):
        ImageFolderDataset(tmp_path, image_size=4)


def test_empty_class_folder_is_named(folder: Path) -> None:
    (folder / "n04_empty").mkdir()
    with pytest.raises(DataError, match=r"class folder .*n04_empty contains no images"):
        ImageFolderDataset(folder, image_size=4)


def test_corrupt_image_raises_without_skip(folder: Path) -> None:
    _write_corrupt(folder / "n02" / "aa.jpg")
    dataset = ImageFolderDataset(folder, image_size=4)
    bad_index = [Path(path).name for path, _ in dataset.samples].index("aa.jpg")
    with pytest.raises(CorruptImageError, match=r"aa\.jpg"):
        dataset[bad_index]


def test_skip_corrupt_substitutes_next_good_image_and_warns_once(folder: Path) -> None:
    _write_corrupt(folder / "n02" / "aa.jpg")  # sorts right after a.PNG, before b.png
    dataset = ImageFolderDataset(folder, image_size=4, skip_corrupt=True)
    bad_index = [Path(path).name for path, _ in dataset.samples].index("aa.jpg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = dataset[bad_index]
        second = dataset[bad_index]
    assert int(first[0][0, 0, 0]) == 20 and first[1] == 1  # b.png
    assert torch.equal(first[0], second[0])
    assert dataset.skipped == {str(folder / "n02" / "aa.jpg")}
    assert len(caught) == 1 and "aa.jpg" in str(caught[0].message)


def test_skip_corrupt_wraps_around_to_the_first_sample(folder: Path) -> None:
    _write_corrupt(folder / "n03" / "z.png")
    dataset = ImageFolderDataset(folder, image_size=4, skip_corrupt=True)
    with pytest.warns(UserWarning, match=r"z\.png"):
        image, label = dataset[len(dataset) - 1]
    assert label == 0 and int(image[0, 0, 0]) == 30


def test_all_corrupt_is_an_error(tmp_path: Path) -> None:
    _write_corrupt(tmp_path / "only" / "x.jpg")
    dataset = ImageFolderDataset(tmp_path, image_size=4, skip_corrupt=True)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="no readable image"):
        dataset[0]


def test_knn_spec_of_a_path_is_that_folder(folder: Path) -> None:
    """``sslvision knn --train-data imagenette_64/train``: the path is the split's own folder."""
    dataset = dataset_from_spec(str(folder), "val", image_size=4)
    assert dataset.classes == ["n01", "n02", "n03"] and dataset.targets == [0, 1, 1, 2]
