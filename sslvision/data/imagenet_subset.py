"""Build an ImageNet subset tree ``OUT/{train,val}/<wnid>/`` from a full ImageNet copy.

The tree is what ``build_dataset("folder", ...)`` reads, so a subset (ImageNet-100, Imagenette,
a list file) is made once instead of filtering 1.28M images at every start.

Input layouts: train is always ``ROOT/train/<wnid>/*.JPEG``. Val is found automatically as
either class folders ``ROOT/val/<wnid>/*.JPEG`` or Kaggle's flat ``ROOT/val/*.JPEG`` labelled by
``LOC_val_solution.csv`` (header ``ImageId,PredictionString``; the first token of
PredictionString is the wnid). The CSV is looked for in ``ROOT/val``, ``ROOT`` and the three
folders above ``ROOT`` (Kaggle keeps it at the top, the images at ``ILSVRC/Data/CLS-LOC``), unless
``val_labels`` names it.

Output: symlinks to the sources (absolute paths) by default, plain copies with ``mode="copy"``,
or with ``size=S`` RGB JPEG files (quality 95) resized to exactly SxS with LANCZOS, no cropping,
the aspect ratio not kept, named ``<stem>.JPEG``: how ``../shared/data/imagenette_64`` was made.
``per_class=N`` takes the first N image files per class in sorted file-name order, for train and
val each, so that the same arguments always give the same subset.

Resuming: ``OUT/subset.json`` records the arguments that define the subset (resolved root,
the set of classes, per_class, mode, size) and the counts once finished. A run into an OUT whose
manifest records other arguments, or into a non-empty OUT without one, is refused rather than
mixing two subsets. A run with the same arguments keeps every output already in place (a link to
the same target; a copy of the same size; a resized file, which is only ever written whole) and
writes the rest; copies and resized files are written to a hidden temporary file in the same
folder and moved into place with ``os.replace``, so a killed run never leaves half a file.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from sslvision.errors import ConfigError, CorruptImageError, DataError, UserError

MANIFEST = "subset.json"
VAL_LABELS = "LOC_val_solution.csv"
JPEG_QUALITY = 95
PARENT_LEVELS = 3  # ROOT = .../ILSVRC/Data/CLS-LOC in Kaggle's download; the CSV is 3 above
MODES = ("link", "copy", "resize")


@dataclass(frozen=True)
class SubsetPlan:
    """The source images of each class per split, checked before anything is written."""

    images: dict[str, dict[str, list[Path]]]  # split -> wnid -> sorted sources
    val_layout: str


def _image_names(folder: Path) -> list[str]:
    """The image files directly in ``folder`` (links followed), hidden ones left out, sorted."""
    from sslvision.data.image_folder import IMAGE_EXTENSIONS  # imports torch: not for --help

    return sorted(
        entry.name
        for entry in os.scandir(folder)
        if entry.is_file()
        and not entry.name.startswith(".")
        and entry.name.lower().endswith(IMAGE_EXTENSIONS)
    )


def _missing_messages(missing: dict[str, list[str]], total: int) -> list[str]:
    """One message per set of missing wnids, naming every place it was missing from."""
    places: dict[tuple[str, ...], list[str]] = {}
    for where, wnids in missing.items():
        if wnids:
            places.setdefault(tuple(wnids), []).append(where)
    return [
        f"{len(wnids)} of {total} classes missing ({' and '.join(where)}): {', '.join(wnids)}"
        for wnids, where in places.items()
    ]


def _from_class_folders(
    split_dir: Path, classes: Sequence[str], missing: dict[str, list[str]], problems: list[str]
) -> dict[str, list[Path]]:
    """Images of ``split_dir/<wnid>/``; missing and empty class folders are recorded."""
    absent = [wnid for wnid in classes if not (split_dir / wnid).is_dir()]
    missing[f"looked for {split_dir}/<wnid>/"] = absent
    found = {
        wnid: [split_dir / wnid / name for name in _image_names(split_dir / wnid)]
        for wnid in classes
        if wnid not in absent
    }
    empty = [wnid for wnid, files in found.items() if not files]
    if empty:
        problems.append(
            f"{len(empty)} of {len(classes)} class folders in {split_dir} hold no image files: "
            + ", ".join(empty)
        )
    return found


def find_val_labels(root: Path) -> Path | None:
    """``LOC_val_solution.csv`` in ``root/val``, ``root`` or up to three folders above it."""
    for folder in [root / "val", root, *root.absolute().parents[:PARENT_LEVELS]]:
        if (folder / VAL_LABELS).is_file():
            return folder / VAL_LABELS
    return None


def read_val_labels(path: Path) -> dict[str, str]:
    """Image stem -> wnid from a Kaggle ``LOC_val_solution.csv`` (first token of each box)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"ImageId", "PredictionString"} <= set(reader.fieldnames or ()):
            raise DataError(
                f"{path} is not a val label file: its header must name ImageId and "
                f"PredictionString, found {','.join(reader.fieldnames or ()) or 'nothing'}"
            )
        labels = {}
        for line, row in enumerate(reader, start=2):
            tokens = (row["PredictionString"] or "").split()
            if not tokens:
                raise DataError(f"{path} line {line}: image {row['ImageId']} has no label")
            labels[row["ImageId"]] = tokens[0]
    return labels


def _from_flat_val(
    val_dir: Path,
    labels_path: Path,
    classes: Sequence[str],
    missing: dict[str, list[str]],
    problems: list[str],
) -> dict[str, list[Path]]:
    """Images of the flat ``val_dir`` grouped by the CSV's wnids; gaps are recorded."""
    labels = read_val_labels(labels_path)
    on_disk = {Path(name).stem: name for name in _image_names(val_dir)}
    chosen = set(classes)
    found: dict[str, list[Path]] = {wnid: [] for wnid in classes}
    absent = []
    for stem, wnid in labels.items():
        if wnid in chosen:
            if stem in on_disk:
                found[wnid].append(val_dir / on_disk[stem])
            else:
                absent.append(stem)
    listed = set(labels.values())
    missing[f"not in val labels {labels_path}"] = [wnid for wnid in classes if wnid not in listed]
    if absent:
        problems.append(
            f"{len(absent)} val images of the chosen classes listed in {labels_path} are not in "
            f"{val_dir}, e.g. {', '.join(sorted(absent)[:5])}"
        )
    return {wnid: sorted(files) for wnid, files in found.items() if files}


def plan_subset(
    root: str | Path,
    classes: Sequence[str],
    per_class: int | None = None,
    val_labels: str | Path | None = None,
) -> SubsetPlan:
    """Find the source images of ``classes`` under ``root``, or raise naming every problem."""
    root = Path(root).absolute()
    train_dir, val_dir = root / "train", root / "val"
    for split_dir in (train_dir, val_dir):
        if not split_dir.is_dir():
            raise DataError(
                f"{split_dir} is not a folder: --imagenet-root must hold train/<wnid>/ and val/"
            )
    missing: dict[str, list[str]] = {}  # where looked -> wnids not found there
    problems: list[str] = []
    train = _from_class_folders(train_dir, classes, missing, problems)
    has_folders = any(
        entry.is_dir() and not entry.name.startswith(".") for entry in val_dir.iterdir()
    )
    has_images = bool(_image_names(val_dir))
    if has_folders and has_images:
        raise DataError(f"{val_dir} holds both class folders and images; expected one layout")
    if has_folders:
        if val_labels is not None:
            raise ConfigError(f"--val-labels is for a flat val folder; {val_dir} has class folders")
        val_layout = f"class folders {val_dir}/<wnid>/"
        val = _from_class_folders(val_dir, classes, missing, problems)
    elif has_images:
        labels_path = Path(val_labels) if val_labels is not None else find_val_labels(root)
        if labels_path is None:
            searched = [root / "val", root, *root.parents[:PARENT_LEVELS]]
            raise DataError(
                f"{val_dir} holds images without class folders (flat layout) but no {VAL_LABELS} "
                f"was found in {', '.join(map(str, searched))}; pass --val-labels FILE"
            )
        if not labels_path.is_file():
            raise DataError(f"val label file {labels_path} does not exist")
        val_layout = f"flat {val_dir}/*, labels from {labels_path}"
        val = _from_flat_val(val_dir, labels_path, classes, missing, problems)
    else:
        raise DataError(f"{val_dir} is empty: expected val/<wnid>/ folders or val/*.JPEG images")
    problems = _missing_messages(missing, len(classes)) + problems
    if problems:
        raise DataError("; ".join(problems))
    images = {
        split: {wnid: files[:per_class] for wnid, files in found.items()}
        for split, found in (("train", train), ("val", val))
    }
    return SubsetPlan(images=images, val_layout=val_layout)


def _read_manifest(out: Path) -> dict | None:
    """OUT's manifest, None for a new or empty OUT; an OUT not made by this tool is refused."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} exists and is not a folder")
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            return json.loads(manifest.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"cannot read {manifest}: {exc}; delete {out} to start over") from exc
    if out.is_dir() and any(out.iterdir()):
        raise DataError(
            f"--out {out} is not empty and holds no {MANIFEST}, so it was not made by this tool; "
            "choose a new or empty folder"
        )
    return None


def _check_same_subset(out: Path, recorded: dict, subset: dict) -> None:
    """Refuse to add to an OUT that holds a subset made with other arguments."""
    there = recorded.get("subset", {})
    details = []
    for key, new in subset.items():
        old = there.get(key)
        if old == new:
            continue
        if key == "classes" and isinstance(old, list):
            not_in_both = len(set(old) ^ set(new))
            details.append(
                f"classes ({len(old)} there, {len(new)} asked, {not_in_both} not in both)"
            )
        else:
            details.append(f"{key} ({old!r} there, {new!r} asked)")
    if not details:
        return
    raise DataError(
        f"--out {out} holds a different subset: {'; '.join(details)}; "
        "choose another --out or delete it"
    )


def _write_manifest(out: Path, manifest: dict) -> None:
    temporary = out / f".{MANIFEST}.partial"
    temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(temporary, out / MANIFEST)


def _resize(source: Path, destination: Path, size: int) -> None:
    try:
        with Image.open(source) as image:
            image.load()
            resized = image.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
    except (OSError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(source, str(exc)) from exc
    resized.save(destination, format="JPEG", quality=JPEG_QUALITY)


def _in_place(source: Path, destination: Path, mode: str) -> bool:
    """Whether a resumed run finds ``destination`` already done: see the module's rule."""
    if mode == "link":
        return destination.is_symlink() and os.readlink(destination) == str(source)
    if destination.is_symlink() or not destination.is_file():
        return False
    return mode == "resize" or destination.stat().st_size == source.stat().st_size


def _place(source: Path, destination: Path, mode: str, size: int | None) -> bool:
    """Put one output in place; False when a correct one was already there (a resumed run)."""
    if _in_place(source, destination, mode):
        return False
    temporary = destination.with_name(f".{destination.name}.partial")
    temporary.unlink(missing_ok=True)
    if mode == "link":
        os.symlink(source, temporary)
    elif mode == "copy":
        shutil.copyfile(source, temporary)
    else:
        _resize(source, temporary, size)
    os.replace(temporary, destination)
    return True


def build_subset(
    root: str | Path,
    classes: str,
    out: str | Path,
    mode: str = "link",
    per_class: int | None = None,
    size: int | None = None,
    val_labels: str | Path | None = None,
) -> dict:
    """Build (or finish) the subset tree in ``out``; returns the manifest written there.

    ``classes`` is a bundled list name or a list file (see ``load_class_list``); ``size`` implies
    resized JPEG copies whatever ``mode`` says. Progress and the summary go to the terminal.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    for name, value in (("--per-class", per_class), ("--size", size)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value}")
    if size is not None:
        mode = "resize"
    from sslvision.data.build import load_class_list  # imports torch: not for --help

    wnids = load_class_list(classes)
    root, out = Path(root).absolute(), Path(out).absolute()
    plan = plan_subset(root, wnids, per_class, val_labels)
    print(f"classes: {len(wnids)} from {classes}; train: class folders {root}/train/<wnid>/")
    print(f"val layout found: {plan.val_layout}")
    subset = {
        "imagenet_root": str(root.resolve()),
        "classes": sorted(wnids),  # the tree does not keep the list's order
        "per_class": per_class,
        "mode": mode,
        "size": size,
        "jpeg_quality": JPEG_QUALITY if mode == "resize" else None,
    }
    recorded = _read_manifest(out)
    if recorded is not None:
        _check_same_subset(out, recorded, subset)
    tasks = []
    for split, by_class in plan.images.items():
        for wnid, sources in by_class.items():
            names = [s.stem + ".JPEG" if mode == "resize" else s.name for s in sources]
            shared = sorted(name for name, n in Counter(names).items() if n > 1)
            if shared:
                raise DataError(f"{split} images of {wnid} would both be written as {shared[0]}")
            tasks += [(s, out / split / wnid / n) for s, n in zip(sources, names, strict=True)]
    out.mkdir(parents=True, exist_ok=True)
    counts = {split: sum(map(len, by_class.values())) for split, by_class in plan.images.items()}
    manifest = {"subset": subset, "val_layout": plan.val_layout, "images": counts}
    _write_manifest(out, {**manifest, "complete": False})
    for folder in {destination.parent for _, destination in tasks}:
        folder.mkdir(parents=True, exist_ok=True)
    written = sum(
        _place(source, destination, mode, size)
        for source, destination in tqdm(tasks, desc="images", unit="img", dynamic_ncols=True)
    )
    manifest["complete"] = True
    _write_manifest(out, manifest)
    how = {"link": "symlinks", "copy": "copies", "resize": f"{size}x{size} JPEG q{JPEG_QUALITY}"}
    print(
        f"done: {len(wnids)} classes, train {counts['train']:,} images, val {counts['val']:,} "
        f"images as {how[mode]} in {out}/{{train,val}}/<wnid>/ "
        f"({written:,} written, {len(tasks) - written:,} already in place)"
    )
    return manifest


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/make_imagenet_subset.py``."""
    parser = argparse.ArgumentParser(
        prog="make_imagenet_subset.py",
        description="Build an ImageNet subset tree OUT/{train,val}/<wnid>/ of symlinks, copies or "
        "resized JPEGs. Resumable: rerun the same command to finish an interrupted run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--imagenet-root",
        required=True,
        metavar="DIR",
        help="folder holding train/<wnid>/ and val/",
    )
    parser.add_argument(
        "--classes",
        required=True,
        metavar="NAME|FILE",
        help="a bundled class list (imagenet100, imagenette) or a file of wnids, one a line",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="the subset's folder; train/ and val/ go in"
    )
    how = parser.add_mutually_exclusive_group()
    for flag, help_text in (
        ("--link", "symlink each image to its source (absolute path)"),
        ("--copy", "copy each image file instead of linking"),
    ):
        how.add_argument(
            flag, dest="mode", action="store_const", const=flag[2:], default="link", help=help_text
        )
    parser.add_argument(
        "--per-class",
        type=int,
        metavar="N",
        default=None,
        help="take the first N files per class in sorted order, for train and val each; None: all",
    )
    parser.add_argument(
        "--size",
        type=int,
        metavar="S",
        default=None,
        help=f"write SxS RGB JPEG copies (LANCZOS, no crop, quality {JPEG_QUALITY}) instead of "
        "links or plain copies; None: keep the originals",
    )
    parser.add_argument(
        "--val-labels",
        default=None,
        metavar="FILE",
        help=f"the {VAL_LABELS} of a flat val folder; None: looked for in ROOT/val, ROOT and "
        f"the {PARENT_LEVELS} folders above ROOT",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; a user error is printed as one ``error:`` line, exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        build_subset(
            args.imagenet_root,
            args.classes,
            args.out,
            mode=args.mode,
            per_class=args.per_class,
            size=args.size,
            val_labels=args.val_labels,
        )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
