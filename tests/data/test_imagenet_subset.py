"""``tools/make_imagenet_subset.py``: both val layouts, the three output kinds, per-class,
clear refusals (missing classes, another subset in OUT) and resuming an interrupted run."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from sslvision.data import imagenet_subset
from sslvision.data.imagenet_subset import main

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "make_imagenet_subset.py"
IMAGENETTE = REPO.parent / "shared" / "data" / "imagenette_64"
WNIDS = ["n01000001", "n01000002", "n01000003"]
TRAIN_PER_CLASS, VAL_PER_CLASS = 4, 3


def _jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 8), (value, 255 - value, 40)).save(path, quality=90)


def _val_stem(class_index: int, i: int) -> str:
    return f"ILSVRC2012_val_{class_index * 100 + i + 1:08d}"


def write_val_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    """A Kaggle ``LOC_val_solution.csv``: two boxes per image, each led by the image's wnid."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImageId", "PredictionString"])
        writer.writerows((stem, f"{wnid} 1 2 10 7 {wnid} 0 0 5 5 ") for stem, wnid in rows)


def make_root(base: Path, flat_val: bool = False) -> Path:
    """A small ImageNet: train/<wnid>/, and val/<wnid>/ or Kaggle's flat val/ with the CSV at
    the top of the download, three folders above the root (``ILSVRC/Data/CLS-LOC``)."""
    root = base / "kaggle" / "ILSVRC" / "Data" / "CLS-LOC" if flat_val else base / "imagenet"
    rows = []
    for k, wnid in enumerate(WNIDS):
        for i in range(TRAIN_PER_CLASS):
            _jpeg(root / "train" / wnid / f"{wnid}_{i}.JPEG", 50 * k + i)
        for i in range(VAL_PER_CLASS):
            stem = _val_stem(k, i)
            _jpeg((root / "val" if flat_val else root / "val" / wnid) / f"{stem}.JPEG", 60 * k + i)
            rows.append((stem, wnid))
    if flat_val:
        write_val_csv(base / "kaggle" / "LOC_val_solution.csv", rows)
    return root


def class_file(base: Path, wnids: list[str]) -> Path:
    path = base / f"classes_{len(wnids)}.txt"
    path.write_text("# a subset\n" + "\n".join(wnids) + "\n")
    return path


def run(root: Path, out: Path, *flags: str, classes: list[str] = WNIDS) -> int:
    """The command line, in this process, with a class list file naming ``classes``."""
    listing = class_file(root.parent, classes)
    return main(
        ["--imagenet-root", str(root), "--classes", str(listing), "--out", str(out), *flags]
    )


def tree(out: Path) -> dict[str, list[str]]:
    """``split/wnid`` -> every file name there, hidden temporary files included."""
    return {
        f"{split}/{folder.name}": sorted(p.name for p in folder.iterdir())
        for split in ("train", "val")
        for folder in sorted((out / split).iterdir())
    }


def expected_tree(per_class: int | None = None, suffix: str = ".JPEG") -> dict[str, list[str]]:
    train = {f"train/{w}": [f"{w}_{i}{suffix}" for i in range(TRAIN_PER_CLASS)] for w in WNIDS}
    val = {
        f"val/{w}": [f"{_val_stem(k, i)}{suffix}" for i in range(VAL_PER_CLASS)]
        for k, w in enumerate(WNIDS)
    }
    return {key: names[:per_class] for key, names in {**train, **val}.items()}


@pytest.mark.parametrize("flat_val", [False, True], ids=["class-folder-val", "flat-val-csv"])
def test_links_in_both_val_layouts(
    tmp_path: Path, flat_val: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    root, out = make_root(tmp_path, flat_val), tmp_path / "out"
    assert run(root, out) == 0
    printed = capsys.readouterr().out
    layout = "val layout found: flat " if flat_val else "val layout found: class folders "
    assert layout in printed and ("LOC_val_solution.csv" in printed) == flat_val
    assert "done: 3 classes, train 12 images, val 9 images as symlinks" in printed
    assert tree(out) == expected_tree()
    name = f"{_val_stem(1, 0)}.JPEG"
    link = out / "val" / WNIDS[1] / name
    source = root / "val" / (name if flat_val else f"{WNIDS[1]}/{name}")
    assert link.is_symlink() and os.readlink(link) == str(source.absolute())
    manifest = json.loads((out / "subset.json").read_text())
    assert manifest["complete"] and manifest["images"] == {"train": 12, "val": 9}
    assert manifest["subset"]["mode"] == "link" and manifest["subset"]["classes"] == WNIDS


def test_explicit_val_labels_when_the_csv_is_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, out = make_root(tmp_path, flat_val=True), tmp_path / "out"
    moved = tmp_path / "labels" / "solution.csv"
    moved.parent.mkdir()
    (tmp_path / "kaggle" / "LOC_val_solution.csv").rename(moved)
    assert run(root, out) == 2
    error = capsys.readouterr().err
    assert "flat layout" in error and "pass --val-labels FILE" in error and str(root) in error
    assert not out.exists()
    assert run(root, out, "--val-labels", str(moved)) == 0
    assert tree(out) == expected_tree()


def test_copy_writes_plain_files(tmp_path: Path) -> None:
    root, out = make_root(tmp_path), tmp_path / "out"
    assert run(root, out, "--copy") == 0
    assert tree(out) == expected_tree()
    copy = out / "train" / WNIDS[2] / f"{WNIDS[2]}_3.JPEG"
    assert not copy.is_symlink()
    assert copy.read_bytes() == (root / "train" / WNIDS[2] / copy.name).read_bytes()


def test_size_writes_square_rgb_jpegs(tmp_path: Path) -> None:
    root, out = make_root(tmp_path), tmp_path / "out"
    Image.new("L", (9, 30), 128).save(root / "train" / WNIDS[0] / f"{WNIDS[0]}_9.png")
    assert run(root, out, "--size", "5") == 0
    expected = expected_tree()
    expected[f"train/{WNIDS[0]}"].append(f"{WNIDS[0]}_9.JPEG")  # a PNG source, renamed
    assert tree(out) == expected
    for path in (out / "train" / WNIDS[0]).iterdir():
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (5, 5))
    manifest = json.loads((out / "subset.json").read_text())["subset"]
    assert (manifest["mode"], manifest["size"], manifest["jpeg_quality"]) == ("resize", 5, 95)


def test_size_refuses_two_sources_with_one_stem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path)
    Image.new("RGB", (6, 6)).save(root / "train" / WNIDS[0] / f"{WNIDS[0]}_1.png")
    assert run(root, tmp_path / "out", "--size", "5") == 2
    message = f"train images of {WNIDS[0]} would both be written as {WNIDS[0]}_1.JPEG"
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("flat_val", [False, True], ids=["class-folder-val", "flat-val-csv"])
def test_per_class_takes_the_first_files_in_sorted_order(tmp_path: Path, flat_val: bool) -> None:
    root, out = make_root(tmp_path, flat_val), tmp_path / "out"
    assert run(root, out, "--per-class", "2") == 0
    assert tree(out) == expected_tree(per_class=2)
    assert json.loads((out / "subset.json").read_text())["images"] == {"train": 6, "val": 6}


def test_missing_classes_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, out = make_root(tmp_path), tmp_path / "out"
    asked = [*WNIDS, "n09999999", "n09999998"]
    assert run(root, out, classes=asked) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: ")
    places = f"looked for {root}/train/<wnid>/ and looked for {root}/val/<wnid>/"
    assert f"2 of 5 classes missing ({places}): n09999999, n09999998" in error
    shutil.rmtree(root / "val" / WNIDS[2])
    assert run(root, out, classes=asked) == 2
    error = capsys.readouterr().err
    assert f"2 of 5 classes missing (looked for {root}/train/<wnid>/): n09999999, n09999998" in (
        error
    )
    val_missing = f"{WNIDS[2]}, n09999999, n09999998"
    assert f"3 of 5 classes missing (looked for {root}/val/<wnid>/): {val_missing}" in error
    assert not out.exists()


def test_missing_classes_in_the_val_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path, flat_val=True)
    labels = tmp_path / "kaggle" / "LOC_val_solution.csv"
    write_val_csv(labels, [(_val_stem(0, i), WNIDS[0]) for i in range(VAL_PER_CLASS)])
    assert run(root, tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert f"2 of 3 classes missing (not in val labels {labels}): {WNIDS[1]}, {WNIDS[2]}" in error
    assert run(root, tmp_path / "out", classes=WNIDS[1:]) == 2  # the CSV names none of them
    error = capsys.readouterr().err
    assert f"2 of 2 classes missing (not in val labels {labels}): " in error


def test_val_images_listed_but_absent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path, flat_val=True)
    (root / "val" / f"{_val_stem(1, 2)}.JPEG").unlink()
    assert run(root, tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert f"1 val images of the chosen classes listed in {tmp_path}" in error
    assert f"are not in {root}/val, e.g. {_val_stem(1, 2)}" in error


def test_empty_class_folder_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path)
    for path in (root / "train" / WNIDS[1]).iterdir():
        path.unlink()
    (root / "train" / WNIDS[1] / "notes.txt").write_text("not an image")
    assert run(root, tmp_path / "out") == 2
    assert f"1 of 3 class folders in {root}/train hold no image files" in capsys.readouterr().err


def test_bad_values_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path)
    assert run(root, tmp_path / "out", "--per-class", "0") == 2
    assert "--per-class must be a positive integer, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [(), ("--copy",), ("--size", "6")], ids=["link", "copy", "size"])
def test_rerun_finishes_damaged_output(
    tmp_path: Path, flags: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    root, out = make_root(tmp_path), tmp_path / "out"
    assert run(root, out, *flags) == 0
    reference = {p: p.read_bytes() for p in out.rglob("*.JPEG")}
    capsys.readouterr()
    deleted = out / "val" / WNIDS[0] / f"{_val_stem(0, 1)}.JPEG"
    deleted.unlink()
    deleted.with_name(f".{deleted.name}.partial").write_bytes(b"half a file")  # killed mid-write
    damaged = out / "train" / WNIDS[2] / f"{WNIDS[2]}_0.JPEG"
    if not flags:  # a link pointing elsewhere
        damaged.unlink()
        damaged.symlink_to(root / "train" / WNIDS[2] / f"{WNIDS[2]}_1.JPEG")
    elif flags == ("--copy",):  # a copy cut short
        damaged.write_bytes(damaged.read_bytes()[:10])
    assert run(root, out, *flags) == 0
    rewritten = 2 if flags != ("--size", "6") else 1
    assert f"({rewritten} written, {21 - rewritten} already in place)" in capsys.readouterr().out
    assert tree(out) == expected_tree()
    assert {p: p.read_bytes() for p in out.rglob("*.JPEG")} == reference


def test_rerun_finishes_an_interrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, out = make_root(tmp_path), tmp_path / "out"
    resize, calls = imagenet_subset._resize, []

    def killed_at_the_fifth(source: Path, destination: Path, size: int) -> None:
        calls.append(source)
        if len(calls) == 5:
            destination.write_bytes(source.read_bytes()[:20])
            raise KeyboardInterrupt
        resize(source, destination, size)

    monkeypatch.setattr(imagenet_subset, "_resize", killed_at_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        run(root, out, "--size", "4")
    assert not json.loads((out / "subset.json").read_text())["complete"]
    visible = [p for p in out.rglob("*.JPEG") if not p.name.startswith(".")]
    assert len(visible) == 4 and len(list(out.rglob(".*.partial"))) == 1
    monkeypatch.setattr(imagenet_subset, "_resize", resize)
    capsys.readouterr()
    assert run(root, out, "--size", "4") == 0
    assert "(17 written, 4 already in place)" in capsys.readouterr().out
    assert tree(out) == expected_tree()  # the half file's temporary was replaced and moved
    assert json.loads((out / "subset.json").read_text())["complete"]
    for path in out.rglob("*.JPEG"):
        with Image.open(path) as image:
            image.load()


def test_refuses_an_out_holding_another_subset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, out = make_root(tmp_path), tmp_path / "out"
    assert run(root, out, classes=WNIDS[:2]) == 0
    before = tree(out)
    capsys.readouterr()
    assert run(root, out, classes=WNIDS[1:]) == 2
    error = capsys.readouterr().err
    assert f"--out {out} holds a different subset: classes (2 there, 2 asked, 2 not in both)" in (
        error
    )
    assert run(root, out, "--per-class", "1", "--copy", classes=WNIDS[:2]) == 2
    error = capsys.readouterr().err
    assert "per_class (None there, 1 asked); mode ('link' there, 'copy' asked)" in error
    assert tree(out) == before
    assert run(root, out, classes=WNIDS[1::-1]) == 0  # the same classes, listed in another order


def test_refuses_a_non_empty_out_it_did_not_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, out = make_root(tmp_path), tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert run(root, out) == 2
    assert f"--out {out} is not empty and holds no subset.json" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


def test_script_help_shows_every_flag_with_its_default() -> None:
    result = _script("--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for flag in ("--imagenet-root", "--classes", "--out", "--link", "--copy", "--per-class"):
        assert flag in text
    for flag in ("--size", "--val-labels"):
        assert flag in text
    assert "(default: link)" in text and text.count("(default: None)") == 6


@pytest.mark.slow  # two interpreters that import torch
def test_script_as_a_user_runs_it(tmp_path: Path) -> None:
    root, out = make_root(tmp_path, flat_val=True), tmp_path / "out"
    listing = class_file(tmp_path, WNIDS)
    result = _script("--imagenet-root", str(root), "--classes", str(listing), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "done: 3 classes, train 12 images, val 9 images" in result.stdout
    assert tree(out) == expected_tree()
    result = _script("--imagenet-root", str(root), "--classes", "imagenette", "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.startswith("error: 10 of 10 classes missing") and "n01440764" in (
        result.stderr
    )


@pytest.mark.real
@pytest.mark.skipif(
    not IMAGENETTE.is_dir(), reason=f"real data not found at {IMAGENETTE} (../shared/data)"
)
def test_real_imagenette_in_both_layouts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """All of Imagenette as links from its class folders; the flat Kaggle layout made of it
    finds the same images; a per-class resized subset is byte-identical from either layout."""
    source = {
        f"{split}/{folder.name}": sorted(p.name for p in folder.iterdir())
        for split in ("train", "val")
        for folder in sorted((IMAGENETTE / split).iterdir())
    }

    def build(root: Path, out: Path, *flags: str) -> dict:
        args = ["--imagenet-root", str(root), "--classes", "imagenette", "--out", str(out)]
        assert main([*args, *flags]) == 0
        return json.loads((out / "subset.json").read_text())

    assert build(IMAGENETTE, tmp_path / "all")["images"] == {"train": 9469, "val": 3925}
    assert "val layout found: class folders" in capsys.readouterr().out
    assert tree(tmp_path / "all") == source

    flat = tmp_path / "kaggle" / "ILSVRC" / "Data" / "CLS-LOC"
    (flat / "val").mkdir(parents=True)
    (flat / "train").symlink_to(IMAGENETTE / "train")
    rows = []
    for wnid_folder in sorted((IMAGENETTE / "val").iterdir()):
        for image in sorted(wnid_folder.iterdir()):
            (flat / "val" / image.name).symlink_to(image)
            rows.append((image.stem, wnid_folder.name))
    write_val_csv(tmp_path / "kaggle" / "LOC_val_solution.csv", rows)
    plan = imagenet_subset.plan_subset(flat, sorted(w.name for w in (IMAGENETTE / "val").iterdir()))
    assert "LOC_val_solution.csv" in plan.val_layout
    found = {
        f"{split}/{wnid}": [p.name for p in files]
        for split, by_class in plan.images.items()
        for wnid, files in by_class.items()
    }
    assert found == source  # 9,469 train and 3,925 val images, without writing 13k more links

    resized = ("--per-class", "3", "--size", "32")
    small = [build(root, tmp_path / f"small_{root.name}", *resized) for root in (IMAGENETTE, flat)]
    assert "val layout found: flat" in capsys.readouterr().out
    assert small[0]["images"] == small[1]["images"] == {"train": 30, "val": 30}
    assert tree(tmp_path / "small_imagenette_64") == {k: v[:3] for k, v in source.items()}
    by_layout = [
        {p.relative_to(out): p.read_bytes() for p in out.rglob("*.JPEG")}
        for out in (tmp_path / "small_imagenette_64", tmp_path / "small_CLS-LOC")
    ]
    assert by_layout[0] == by_layout[1] and len(by_layout[0]) == 60
    for path in (tmp_path / "small_CLS-LOC").rglob("*.JPEG"):
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (32, 32))
