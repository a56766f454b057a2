"""VOC XML and COCO JSON detection data read into the same records, with errors that name files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2

from sslvision.data.detection import coco_detection, voc_detection
from sslvision.errors import AnnotationError, DataError

# image stem -> (width, height, [(class, xmin, ymin, xmax, ymax, difficult), ...])
IMAGES = {
    "a": (40, 30, [("cat", 2, 3, 20, 25, False), ("dog", 21, 1, 39, 29, True)]),
    "b": (32, 48, [("dog", 0, 0, 16, 16, False)]),
    "c": (24, 24, []),
}
REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "det_fruits"


def write_coco(path: Path, images: dict = IMAGES) -> Path:
    """The same annotations as COCO JSON; category ids deliberately not 1..C."""
    categories = {"cat": 7, "dog": 3}
    data = {"images": [], "annotations": [], "categories": []}
    data["categories"] = [{"id": i, "name": n} for n, i in categories.items()]
    for image_id, (stem, (width, height, objects)) in enumerate(images.items(), start=10):
        data["images"].append(
            {
                "id": image_id,
                "file_name": f"JPEGImages/{stem}.png",
                "width": width,
                "height": height,
            }
        )
        for name, x0, y0, x1, y1, difficult in objects:
            data["annotations"].append(
                {
                    "id": len(data["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": categories[name],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": int(difficult),
                }
            )
    path.write_text(json.dumps(data))
    return path


def test_voc_reads_boxes_labels_and_difficult_flags(tmp_path: Path, write_voc) -> None:
    dataset = voc_detection(write_voc(tmp_path, IMAGES), "train")
    assert dataset.classes == ["cat", "dog"] and len(dataset) == 3
    image, target = dataset[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.uint8
    assert target["boxes"].tolist() == [[2, 3, 20, 25], [21, 1, 39, 29]]
    assert target["labels"].tolist() == [1, 2] and target["ignore"].tolist() == [False, True]
    _, empty = dataset[2]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_coco_reads_the_same_records_as_voc(tmp_path: Path, write_voc) -> None:
    voc = voc_detection(write_voc(tmp_path, IMAGES), "train")
    coco = coco_detection(write_coco(tmp_path / "instances.json"), tmp_path)
    assert coco.classes == ["dog", "cat"]  # category-id order
    coco = coco_detection(tmp_path / "instances.json", tmp_path, classes=voc.classes)
    assert coco.records == voc.records


def test_a_flip_moves_the_boxes_with_the_image(tmp_path: Path, write_voc) -> None:
    dataset = voc_detection(write_voc(tmp_path, IMAGES), "train")
    dataset.flip = v2.RandomHorizontalFlip(p=1.0)
    _, target = dataset[0]
    assert target["boxes"].tolist() == [[20, 3, 38, 25], [1, 1, 19, 29]]  # x -> 40 - x


def test_errors_name_the_file(tmp_path: Path, write_voc) -> None:
    root = write_voc(tmp_path / "voc", IMAGES)
    with pytest.raises(DataError, match=r"no VOC split file .*test.txt"):
        voc_detection(root, "test")
    with pytest.raises(AnnotationError, match=r"a.xml: class 'dog' is not one of cat"):
        voc_detection(root, "train", classes=["cat"])
    (root / "Annotations" / "b.xml").write_text("<annotation><object>")
    with pytest.raises(AnnotationError, match=r"cannot parse .*b.xml"):
        voc_detection(root, "train")
    (root / "Annotations" / "b.xml").unlink()
    with pytest.raises(DataError, match=r"lists 'b' but .*b.xml does not exist"):
        voc_detection(root, "train")

    flat = write_voc(tmp_path / "flat", {"d": (10, 10, [("cat", 5, 5, 5, 9, False)])})
    with pytest.raises(AnnotationError, match=r"d.xml, object 1: empty box"):
        voc_detection(flat, "train")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"images": []}')
    with pytest.raises(AnnotationError, match=r"bad.json is not COCO detection JSON"):
        coco_detection(bad_json, tmp_path)


def test_boxes_are_checked_against_the_image_size_where_it_is_given(
    tmp_path: Path, write_voc
) -> None:
    """VOC's <size> and COCO's width/height bound the boxes; without them only emptiness counts."""
    beyond = {"d": (10, 10, [("cat", 2, 2, 12, 9, False)])}  # xmax 12 in a 10 px wide image
    root = write_voc(tmp_path / "voc", beyond)
    assert len(voc_detection(root, "train")) == 1  # write_voc writes no <size>
    xml = root / "Annotations" / "d.xml"
    xml.write_text(
        xml.read_text().replace(
            "<object>", "<size><width>10</width><height>10</height></size><object>", 1
        )
    )
    with pytest.raises(
        AnnotationError, match=r"d.xml, object 1: .* outside the image, which is 10 x 10"
    ):
        voc_detection(root, "train")
    coco = write_coco(tmp_path / "beyond.json", beyond)
    with pytest.raises(AnnotationError, match=r"beyond.json, annotation 1: .* outside the image"):
        coco_detection(coco, root)


def test_every_image_is_looked_for_when_the_set_is_read(tmp_path: Path, write_voc) -> None:
    root = write_voc(tmp_path, IMAGES)
    coco = write_coco(tmp_path / "instances.json")
    (root / "JPEGImages" / "c.png").unlink()  # c has no objects: only its file is missing
    with pytest.raises(DataError, match=r"c.xml: the image .*JPEGImages/c.png does not exist"):
        voc_detection(root, "train")
    with pytest.raises(DataError, match=r"instances.json: the image .*c.png does not exist"):
        coco_detection(coco, tmp_path)


@pytest.mark.real
@pytest.mark.skipif(not REAL.is_dir(), reason=f"real data not found at {REAL} (../shared/data)")
def test_det_fruits_voc_and_coco_agree() -> None:
    """The two formats of ../shared/data/det_fruits give the same objects (VOC rounds to pixels)."""
    for split, count in (("train", 240), ("test", 60)):
        voc = voc_detection(REAL, split)
        coco = coco_detection(REAL / "coco" / f"instances_{split}.json", REAL, classes=voc.classes)
        assert voc.classes == ["apple", "banana", "orange"] and len(voc) == len(coco) == count
        by_image = {record.image: record for record in coco.records}
        for record in voc.records:
            twin = by_image[record.image]
            assert twin.labels == record.labels
            assert torch.allclose(torch.tensor(twin.boxes), torch.tensor(record.boxes), atol=1.0)
        image, _ = voc[0]
        assert image.dtype == torch.uint8 and max(image.shape[1:]) <= 512
