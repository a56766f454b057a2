from __future__ import annotations

import pytest
import torch

from sslvision.data.spec import dataset_from_spec
from sslvision.data.synthetic import SHAPES, SyntheticShapesDataset


def test_same_seed_and_split_give_identical_images() -> None:
    first = SyntheticShapesDataset(num_images=60, image_size=16, seed=3)
    second = SyntheticShapesDataset(num_images=60, image_size=16, seed=3)
    assert torch.equal(first.images, second.images)
    assert first.targets == second.targets


def test_splits_and_seeds_differ() -> None:
    train = SyntheticShapesDataset(num_images=60, image_size=16, seed=0, split="train")
    val = SyntheticShapesDataset(num_images=60, image_size=16, seed=0, split="val")
    other_seed = SyntheticShapesDataset(num_images=60, image_size=16, seed=1, split="train")
    assert not torch.equal(train.images, val.images)
    assert not torch.equal(train.images, other_seed.images)


def test_layout_dtype_and_attributes() -> None:
    dataset = SyntheticShapesDataset(num_images=24, image_size=20, num_classes=12)
    assert dataset.images.shape == (24, 3, 20, 20)
    assert dataset.images.dtype == torch.uint8 and dataset.images.is_contiguous()
    assert dataset.classes == list(SHAPES) and dataset.num_classes == 12
    image, label = dataset[5]
    assert torch.equal(image, dataset.images[5]) and label == dataset.targets[5]
    assert len(dataset) == 24


def test_at_least_ten_distinct_shapes_and_first_ten_by_default() -> None:
    assert len(SHAPES) >= 10
    assert SyntheticShapesDataset(num_images=10, image_size=8).classes == list(SHAPES)[:10]


def test_labels_are_balanced_and_shuffled() -> None:
    dataset = SyntheticShapesDataset(num_images=103, image_size=8, num_classes=10)
    counts = torch.bincount(torch.tensor(dataset.targets), minlength=10)
    assert int(counts.max() - counts.min()) <= 1 and int(counts.sum()) == 103
    assert dataset.targets != sorted(dataset.targets)


def test_colour_is_not_the_class() -> None:
    dataset = SyntheticShapesDataset(num_images=400, image_size=16, num_classes=4)
    mean_colour = dataset.images.float().mean(dim=(2, 3))
    labels = torch.tensor(dataset.targets)
    per_class = torch.stack([mean_colour[labels == label].mean(0) for label in range(4)])
    assert float((per_class - per_class.mean(0)).abs().max()) < 15.0


def test_images_use_the_whole_range_with_visible_structure() -> None:
    images = SyntheticShapesDataset(num_images=20, image_size=16).images.float()
    assert float(images.std(dim=(1, 2, 3)).min()) > 10.0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"split": "holdout"}, "unknown split 'holdout'; choose one of train, val, test"),
        ({"num_classes": 13}, "num_classes must be between 2 and 12"),
        ({"num_images": 5}, r"num_images \(5\) must be at least num_classes"),
        ({"image_size": 4}, "image_size must be at least 8"),
    ],
)
def test_bad_arguments_are_explained(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticShapesDataset(**{"num_images": 20, "image_size": 8, **arguments})


def test_knn_spec_takes_an_image_count() -> None:
    assert len(dataset_from_spec("synthetic:24", "val", image_size=16)) == 24
    with pytest.raises(ValueError, match="write 'synthetic' or 'synthetic:N' with N images"):
        dataset_from_spec("synthetic:many", "val", image_size=16)
