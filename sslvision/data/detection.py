"""Object-detection datasets in the layouts users keep them: PASCAL VOC XML and COCO JSON.

Both read into the same records, so an evaluator sees one kind of dataset: each item is a uint8
RGB image (3, H, W) at its own size and a target with ``boxes`` (float32 (N, 4): xmin, ymin, xmax,
ymax in pixels), ``labels`` (int64, from 1; 0 is the background torchvision's detectors reserve)
and ``ignore`` (bool: VOC's ``difficult`` or COCO's ``iscrowd``, which evaluation leaves out).
Label ``i + 1`` is ``classes[i]``. Pass a training set's ``classes`` to its test set, so that both
number the classes alike. Every annotation is checked, and every image file looked for, when a
data set is read: a bad box or a missing image stops a run before fine-tuning, not in the middle.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from sslvision.data.decode import read_image_rgb
from sslvision.errors import AnnotationError, DataError

CORNERS = ("xmin", "ymin", "xmax", "ymax")


@dataclass(frozen=True)
class DetectionRecord:
    """One annotated image: its file, its objects' boxes (xyxy pixels), labels and ignore flags."""

    image: Path
    boxes: tuple[tuple[float, float, float, float], ...]
    labels: tuple[int, ...]
    ignore: tuple[bool, ...]


class DetectionDataset(Dataset):
    """Annotated images. Set ``flip`` (a ``v2.RandomHorizontalFlip``) to flip image and boxes
    together, as a training set does."""

    def __init__(
        self, records: Sequence[DetectionRecord], classes: Sequence[str], source: str
    ) -> None:
        if not records:
            raise AnnotationError(f"{source} lists no images")
        self.records = list(records)
        self.classes = list(classes)
        self.source = source
        self.flip: v2.Transform | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        record = self.records[index]
        image = read_image_rgb(record.image)
        boxes = tv_tensors.BoundingBoxes(
            torch.tensor(record.boxes, dtype=torch.float32).reshape(-1, 4),
            format="XYXY",
            canvas_size=tuple(image.shape[-2:]),
        )
        if self.flip is not None:
            image, boxes = self.flip(tv_tensors.Image(image), boxes)
        target = {
            "boxes": boxes.as_subclass(torch.Tensor),
            "labels": torch.tensor(record.labels, dtype=torch.int64),
            "ignore": torch.tensor(record.ignore, dtype=torch.bool),
        }
        return image.as_subclass(torch.Tensor), target


def _check_box(
    box: Sequence[float], where: str, size: tuple[float, float] | None
) -> tuple[float, float, float, float]:
    """The box as floats; refused when empty or, where the image ``size`` is known, outside it."""
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    if not (xmax > xmin and ymax > ymin):
        raise AnnotationError(f"{where}: empty box (xmin, ymin, xmax, ymax) = {tuple(box)}")
    if size is not None and (xmin < 0 or ymin < 0 or xmax > size[0] or ymax > size[1]):
        raise AnnotationError(
            f"{where}: box (xmin, ymin, xmax, ymax) = {tuple(box)} lies outside the image, "
            f"which is {size[0]:g} x {size[1]:g} pixels"
        )
    return xmin, ymin, xmax, ymax


def _number(text: str | None, tag: str, where: str) -> float:
    """The number in the XML element ``tag``; a missing or non-numeric one names the tag."""
    if text is None:
        raise AnnotationError(f"{where}: <{tag}> is missing")
    try:
        return float(text)
    except ValueError:
        raise AnnotationError(f"{where}: <{tag}> is not a number: {text.strip()!r}") from None


def _voc_size(annotation: ET.Element, where: str) -> tuple[float, float] | None:
    """The image's (width, height) from ``<size>``; None where it is absent or 0 (as some tools
    write it), and then boxes are not checked against the image."""
    size = annotation.find("size")
    if size is None:
        return None
    width, height = (
        _number(size.findtext(tag), tag, f"{where}, <size>") for tag in ("width", "height")
    )
    return (width, height) if width > 0 and height > 0 else None


def _label_of(name: str, classes: list[str], where: str) -> int:
    if name not in classes:
        raise AnnotationError(f"{where}: class '{name}' is not one of {', '.join(classes)}")
    return classes.index(name) + 1


def _record(
    image: Path, objects: Sequence[tuple[str, tuple, bool]], classes: list[str], where: str
) -> DetectionRecord:
    """A record from (class name, box, ignore) triples; an unknown class or a missing image file
    names ``where``."""
    if not image.is_file():
        raise DataError(f"{where}: the image {image} does not exist")
    return DetectionRecord(
        image,
        tuple(box for _, box, _ in objects),
        tuple(_label_of(name, classes, where) for name, _, _ in objects),
        tuple(ignore for _, _, ignore in objects),
    )


def voc_detection(
    root: str | Path, split: str, classes: Sequence[str] | None = None
) -> DetectionDataset:
    """The images of ``ImageSets/Main/<split>.txt`` under a VOC-layout ``root``.

    Annotations are ``Annotations/<id>.xml`` and images ``JPEGImages/<filename>``. Without
    ``classes`` they are the sorted class names of this split's objects.
    """
    root = Path(root)
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise DataError(f"no VOC split file {listing}")
    parsed = []
    for image_id in listing.read_text().split():
        xml_path = root / "Annotations" / f"{image_id}.xml"
        if not xml_path.is_file():
            raise DataError(f"{listing} lists '{image_id}' but {xml_path} does not exist")
        try:
            annotation = ET.parse(xml_path).getroot()
        except ET.ParseError as error:
            raise AnnotationError(f"cannot parse {xml_path}: {error}") from None
        size = _voc_size(annotation, str(xml_path))
        objects = []
        for number, obj in enumerate(annotation.iter("object"), start=1):
            where = f"{xml_path}, object {number}"
            box = obj.find("bndbox")
            name = obj.findtext("name")
            if box is None or not name:
                raise AnnotationError(f"{where}: an object needs a <name> and a <bndbox>")
            corners = [_number(box.findtext(tag), tag, where) for tag in CORNERS]
            difficult = obj.findtext("difficult", "0").strip() == "1"
            objects.append((name.strip(), _check_box(corners, where, size), difficult))
        image = root / "JPEGImages" / annotation.findtext("filename", f"{image_id}.jpg").strip()
        parsed.append((image, xml_path, objects))
    names = (
        list(classes) if classes is not None else sorted({o[0] for *_, ob in parsed for o in ob})
    )
    records = [_record(image, objects, names, str(xml_path)) for image, xml_path, objects in parsed]
    return DetectionDataset(records, names, f"{listing}")


def coco_detection(
    annotations: str | Path, image_root: str | Path, classes: Sequence[str] | None = None
) -> DetectionDataset:
    """The images of a COCO detection JSON; ``file_name`` is relative to ``image_root``.

    Without ``classes`` they are the category names in category-id order. Boxes are COCO's
    [x, y, width, height], read into corners, and checked against the image's ``width`` and
    ``height`` where the JSON gives them; ``iscrowd`` (or a ``difficult`` key) marks the objects
    evaluation ignores. Images without annotations stay in, with no boxes.
    """
    annotations = Path(annotations)
    if not annotations.is_file():
        raise DataError(f"no COCO annotation file {annotations}")
    try:
        data = json.loads(annotations.read_text())
        categories = {c["id"]: c["name"] for c in data["categories"]}
        images = {image["id"]: image["file_name"] for image in data["images"]}
        sizes = {
            image["id"]: (image["width"], image["height"])
            if image.get("width") and image.get("height")
            else None
            for image in data["images"]
        }
        objects: dict[int, list] = {image_id: [] for image_id in images}
        for ann in data["annotations"]:
            where = f"{annotations}, annotation {ann['id']}"
            if ann["image_id"] not in images or ann["category_id"] not in categories:
                raise AnnotationError(f"{where}: unknown image_id or category_id")
            x, y, w, h = ann["bbox"]
            ignore = bool(ann.get("iscrowd", 0) or ann.get("difficult", 0))
            box = _check_box((x, y, x + w, y + h), where, sizes[ann["image_id"]])
            objects[ann["image_id"]].append((categories[ann["category_id"]], box, ignore))
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise AnnotationError(f"{annotations} is not COCO detection JSON: {error!r}") from None
    names = list(classes) if classes is not None else [categories[k] for k in sorted(categories)]
    records = [
        _record(Path(image_root) / images[image_id], found, names, str(annotations))
        for image_id, found in objects.items()
    ]
    return DetectionDataset(records, names, str(annotations))


def collate_detection(batch: Sequence) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Images of different sizes stay a list, as torchvision's detectors take them."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
