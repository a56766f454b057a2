"""Bad input through ``sslvision`` as a user types it: exit 2, one line that names the culprit.

Each case once ended in a raw traceback, or went on as if nothing were wrong. Config-level cases
fail before any data is read or any model is built; argparse-level ones (a flag's range) end in
argparse's usage line and its error.
"""

from __future__ import annotations

import json
import urllib.error
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torchvision.io import write_png

from sslvision.cli import main

# The test images are written with torchvision's (deprecated in 0.29) encoder.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

DEMO = str(Path(__file__).resolve().parents[1] / "configs" / "simclr" / "demo.yaml")
SYNTHETIC = ["--train-data", "synthetic:20", "--val-data", "synthetic:10", "--num-workers", "0"]
# stem -> (width, height, [(class, xmin, ymin, xmax, ymax, difficult)]), for the write_voc fixture
VOC = {"a": (40, 30, [("cat", 2, 3, 20, 25, False)]), "b": (32, 32, [("dog", 0, 0, 16, 16, False)])}
DETECT = ["--steps", "1", "--batch-size", "1", "--num-workers", "0"]


class Setup:
    """What a case may need to prepare: a scratch folder, the VOC writer, monkeypatch."""

    def __init__(self, tmp_path: Path, write_voc: Callable, monkeypatch: pytest.MonkeyPatch):
        self.tmp = tmp_path
        self.write_voc = write_voc
        self.monkeypatch = monkeypatch

    def pretrain(self, *overrides: str) -> list[str]:
        """The demo recipe cut to one small step (a case that slipped through stays quick)."""
        small = ["data.num_images=32", "train.batch_size=8", "train.max_steps=1"]
        return ["pretrain", DEMO, f"output_dir={self.tmp / 'runs'}", *small, *overrides]

    def image_folder(self, *classes: str, empty: str = "") -> Path:
        """``tmp/train/<class>/0.png`` for every class, and an ``empty`` class folder."""
        root = self.tmp / "train"
        for name in classes:
            (root / name).mkdir(parents=True)
            write_png(torch.full((3, 8, 8), 100, dtype=torch.uint8), str(root / name / "0.png"))
        if empty:
            (root / empty).mkdir(parents=True)
        return root

    def voc(self) -> Path:
        """A VOC root whose annotations give their image's <size>; train and test splits."""
        root = self.write_voc(self.tmp / "voc", VOC, "train")
        self.write_voc(root, VOC, "test")
        for stem, (width, height, _) in VOC.items():
            path = root / "Annotations" / f"{stem}.xml"
            tree = ET.parse(path)
            size = ET.SubElement(tree.getroot(), "size")
            ET.SubElement(size, "width").text = str(width)
            ET.SubElement(size, "height").text = str(height)
            tree.write(path)
        return root

    def voc_with(self, tag: str, value: str) -> list[str]:
        """``detect`` on a VOC root whose first object of a.xml has ``<tag>value</tag>``."""
        root = self.voc()
        path = root / "Annotations" / "a.xml"
        tree = ET.parse(path)
        tree.getroot().find("object/bndbox").find(tag).text = value
        tree.write(path)
        return ["detect", "random", "--voc", str(root), *DETECT]

    def coco(self, bbox: list[float]) -> list[str]:
        """``detect`` on a COCO JSON of one 40 x 30 image whose one object has ``bbox``."""
        write_png(torch.zeros((3, 30, 40), dtype=torch.uint8), str(self.tmp / "a.png"))
        data = {
            "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox}],
            "categories": [{"id": 1, "name": "cat"}],
        }
        path = self.tmp / "instances.json"
        path.write_text(json.dumps(data))
        return ["detect", "random", "--coco-train", str(path), "--coco-val", str(path), *DETECT]

    def missing_test_image(self) -> list[str]:
        """A VOC test split whose image c.png is gone; fine-tuning must not start."""
        root = self.voc()
        self.write_voc(root, {"c": (16, 16, [("cat", 1, 1, 9, 9, False)])}, "test")
        (root / "JPEGImages" / "c.png").unlink()

        def fine_tune(*args: object, **kwargs: object) -> None:
            raise AssertionError("fine-tuning started before the data was checked")

        self.monkeypatch.setattr("sslvision.eval.detection.run_detection", fine_tune)
        return ["detect", "random", "--voc", str(root), *DETECT]

    def offline_weights(self) -> list[str]:
        """Published weights neither in an (empty) TORCH_HOME nor downloadable."""
        self.monkeypatch.setenv("TORCH_HOME", str(self.tmp / "torch"))

        def offline(url: str, *args: object, **kwargs: object) -> None:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

        self.monkeypatch.setattr("torch.hub.download_url_to_file", offline)
        return ["knn", "ResNet18_Weights.IMAGENET1K_V1", *SYNTHETIC]

    def table(self, name: str, content: bytes) -> list[str]:
        path = self.tmp / name
        path.write_bytes(content)
        return ["report", str(path)]


def case(name: str, argv: Callable[[Setup], list[str]], *named: str, usage: bool = False) -> Any:
    """One bad input: its argv (made from a Setup), what stderr must name, and whether argparse
    reports it (``usage``: the usage line, then the flag's error) rather than ``sslvision``."""
    return pytest.param(argv, named, usage, id=name)


def knn(*flags: str) -> Callable[[Setup], list[str]]:
    return lambda s: ["knn", "random", *SYNTHETIC, *flags]


def detect(*flags: str) -> Callable[[Setup], list[str]]:
    return lambda s: ["detect", "random", "--voc", str(s.tmp), *DETECT, *flags]


def pretrain(*overrides: str) -> Callable[[Setup], list[str]]:
    return lambda s: s.pretrain(*overrides)


CASES = [
    case("batch-size-0", pretrain("train.batch_size=0"), "train.batch_size", ">= 1"),
    case("batch-size-negative", pretrain("train.batch_size=-4"), "train.batch_size", "-4"),
    case("epochs-0", pretrain("train.epochs=0"), "train.epochs"),
    case("image-size-0", pretrain("data.image_size=0"), "data.image_size"),
    case("workers-negative", pretrain("data.num_workers=-1"), "data.num_workers"),
    case("base-lr-negative", pretrain("optim.base_lr=-0.1"), "optim.base_lr"),
    case("grad-clip-negative", pretrain("train.grad_clip=-1"), "train.grad_clip"),
    case("keep-negative", pretrain("checkpoint.keep_every_epochs=-1"), "checkpoint.keep_every"),
    case(
        "unknown-dataset",
        pretrain("data.dataset=imagenet"),
        "data.dataset",
        "'imagenet'",
        "synthetic, folder, cifar10, cifar100",
    ),
    case("fp8", pretrain("train.precision=fp8"), "train.precision", "'fp8'", "no, bf16, fp16"),
    case(
        "probability-above-1",
        pretrain("augment.views=[{blur_p: 2.0}]"),
        "augment.views.0.blur_p",
        "[0, 1]",
    ),
    case(
        "empty-class-folder",
        lambda s: s.pretrain(
            "data.dataset=folder", f"data.path={s.image_folder('cat', empty='dog')}"
        ),
        "train/dog",
        "contains no images",
    ),
    case("unknown-encoder", lambda s: ["knn", "nonsense", *SYNTHETIC], "'nonsense'", "random"),
    case(
        "unknown-weights",
        lambda s: ["knn", "ResNet18_Weights.NOPE", *SYNTHETIC],
        "ResNet18_Weights.NOPE",
        "ResNet18_Weights.IMAGENET1K_V1",
    ),
    case(
        "offline-weights",
        Setup.offline_weights,
        "ResNet18_Weights.IMAGENET1K_V1",
        "torch hub cache",
        "cannot be downloaded",
    ),
    case("k-0", knn("--k", "0"), "--k", usage=True),
    case("k-negative", knn("--k", "5", "-3"), "--k", usage=True),
    case("knn-batch-size-0", knn("--batch-size", "0"), "--batch-size", usage=True),
    case("knn-workers-negative", knn("--num-workers", "-1"), "--num-workers", usage=True),
    case("detect-steps-0", detect("--steps", "0"), "--steps", usage=True),
    case("detect-batch-size-0", detect("--batch-size", "0"), "--batch-size", usage=True),
    case("detect-lr-0", detect("--lr", "0"), "--lr", usage=True),
    case("detect-lr-negative", detect("--lr=-0.1"), "--lr", usage=True),
    case("unknown-backbone", knn("--backbone", "resnet999"), "'resnet999'", "resnet18"),
    case("unknown-model-backbone", pretrain("model.backbone=resnet999"), "'resnet999'"),
    case("unknown-timm-model", knn("--backbone", "timm:xyz"), "timm model 'xyz'"),
    case("report-empty-file", lambda s: s.table("empty.csv", b""), "empty.csv"),
    case(
        "report-foreign-csv",
        lambda s: s.table("foreign.csv", b"a,b\n1,2\n"),
        "foreign.csv",
        "'evaluator'",
    ),
    case("report-binary-file", lambda s: s.table("bin.csv", bytes(range(256)) * 4), "bin.csv"),
    case(
        "report-evaluator-without-rows",
        lambda s: [*s.table("knn.csv", b"evaluator,encoder\nknn,random\n"), "--evaluator", "lin"],
        "knn.csv",
        "'lin'",
        "knn",
    ),
    case(
        "report-pretrain-rows-only",
        lambda s: [*s.table("old.csv", b"command,method\npretrain,simclr\n"), "--evaluator", "knn"],
        "old.csv",
        "'evaluator'",
    ),
    case("voc-not-a-number", lambda s: s.voc_with("xmax", "abc"), "a.xml", "<xmax>", "'abc'"),
    case("voc-beyond-width", lambda s: s.voc_with("xmax", "41"), "a.xml", "outside"),
    case("voc-negative-xmin", lambda s: s.voc_with("xmin", "-1"), "a.xml", "outside"),
    case("coco-outside", lambda s: s.coco([30, 10, 20, 10]), "instances.json", "40 x 30"),
    case("missing-test-image", Setup.missing_test_image, "c.png", "does not exist"),
]


@pytest.mark.parametrize(("make_argv", "named", "usage"), CASES)
def test_bad_input_exits_2_with_one_line_naming_it(
    make_argv: Callable[[Setup], list[str]],
    named: tuple[str, ...],
    usage: bool,
    tmp_path: Path,
    write_voc: Callable,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    argv = make_argv(Setup(tmp_path, write_voc, monkeypatch))
    if usage:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        code, err = exit_info.value.code, capsys.readouterr().err
        lines = err.strip().splitlines()
        assert lines[0].startswith("usage: sslvision ") and ": error: argument " in lines[-1], err
    else:
        code, err = main(argv), capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert code == 2, err
    assert "Traceback" not in err
    for part in named:
        assert part in err, err
