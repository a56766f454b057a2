"""Features of an encoder on a train and a val split, extracted once and kept on disk.

Extraction is the slow part of every evaluator: a kNN sweep, a linear probe and a few-shot table
of the same encoder on the same images all start from the same features. :class:`FeatureStore`
extracts each split once, lazily, and keeps it in a cache folder keyed by what the features
depend on: the encoder's weights as loaded (and, for BatchNorm statistics estimated on train,
train's file list), the listing of each split's files (paths, sizes, mtimes), the transform and
the image size. A changed checkpoint or an added, removed or rewritten image gives another key,
so a stale entry is never read; an unreadable entry is extracted again.

Layout: ``cache_dir/<20 hex of the entry key>/`` holds ``train.features.npy``,
``train.labels.npy`` (and val's) and ``manifest.json``, which has one line per split with that
split's key. Files are written atomically and the manifest last, so a split whose line is missing
or names another key is a miss; the line is dropped before its files are replaced.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import CIFAR10, CIFAR100

import sslvision
from sslvision.backbones import Backbone
from sslvision.data.cifar import CIFARDataset
from sslvision.data.class_match import label_by_train_classes
from sslvision.data.image_folder import ImageFolderDataset
from sslvision.data.spec import dataset_from_spec
from sslvision.engine.checkpoint import atomic_write
from sslvision.errors import ConfigError
from sslvision.eval.bn_statistics import estimate_bn_statistics
from sslvision.eval.encoders import Encoder
from sslvision.eval.features import extract_features

FORMAT_VERSION = 1  # part of every key: a new layout never reads an old entry
SPLITS = ("train", "val")
MANIFEST = "manifest.json"
_CIFAR_FOLDERS = {10: CIFAR10.base_folder, 100: CIFAR100.base_folder}
_UNREADABLE = (OSError, ValueError, EOFError, KeyError, TypeError)


@dataclass(frozen=True)
class FeatureSet:
    """One split's features (float32 ``(N, D)``) and labels (int64 ``(N,)``).

    Read from the cache, both are copy-on-write memory maps of the files (``reused`` True);
    ``path`` is the cache entry's folder, None without a cache.
    """

    features: Tensor
    labels: Tensor
    reused: bool
    path: Path | None


class CenterCropped(Dataset):
    """``dataset``'s uint8 images centre-cropped to ``size`` x ``size`` (a slice, no copy).

    Its ``classes`` and ``num_classes`` stay visible, for class matching and the kNN vote.
    """

    def __init__(self, dataset: Dataset, size: int) -> None:
        self.dataset = dataset
        self.size = size
        for name in ("classes", "num_classes"):
            if hasattr(dataset, name):
                setattr(self, name, getattr(dataset, name))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.dataset[index]
        top = (image.shape[-2] - self.size) // 2
        left = (image.shape[-1] - self.size) // 2
        return image[..., top : top + self.size, left : left + self.size], label


class FeatureStore:
    """Features of one encoder on a train and a val split, extracted once per
    (encoder identity, data listing, transform, image size) and cached on disk.

    Images are loaded at ``round(S / crop_ratio)`` and centre-cropped to ``S``, the encoder's
    image size (``crop_ratio=0.875``: the papers' "resize 256, centre crop 224"). Nothing is
    decoded until a split's features or the backbone are asked for, and val only by
    ``features("val")``. ``cache_dir=None`` extracts without caching. The encoder's own backbone
    keeps its loaded weights: BatchNorm statistics are estimated on a copy.
    """

    def __init__(
        self,
        encoder: Encoder,
        train_data: str,
        val_data: str,
        *,
        cache_dir: str | Path | None,
        crop_ratio: float = 1.0,
        batch_size: int = 256,
        num_workers: int = 2,
        device: str | torch.device | None = None,
        progress: bool | None = None,
    ) -> None:
        if not 0.0 < crop_ratio <= 1.0:
            raise ConfigError(f"crop_ratio must be in (0, 1], got {crop_ratio}")
        self.encoder = encoder
        self.data = {"train": train_data, "val": val_data}
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.progress = progress
        size = encoder.image_size
        self.transform = {"load_size": round(size / crop_ratio), "crop_size": size}
        raw = {
            split: dataset_from_spec(self.data[split], split, self.transform["load_size"])
            for split in SPLITS
        }
        self.train_set = self._cropped(raw["train"])
        self.val_set = label_by_train_classes(self.train_set, self._cropped(raw["val"]))
        self.num_classes: int | None = getattr(self.train_set, "num_classes", None)
        self._raw = raw
        self._cache_dir = None if cache_dir is None else Path(cache_dir)
        # Hashed now, before anything could change the weights.
        self._weights = None if cache_dir is None else _weights_digest(encoder)
        self._backbone: Backbone | None = None
        self._seen: int | None = None
        self._sets: dict[str, FeatureSet] = {}
        self._listing_keys: dict[str, str] = {}

    def backbone(self) -> Backbone:
        """The encoder's backbone on the device, with BatchNorm statistics estimated on
        ``train_set`` first when ``encoder.bn_statistics == "estimate"`` (once, lazily)."""
        if self._backbone is None:
            if self.encoder.bn_statistics == "estimate":
                backbone = copy.deepcopy(self.encoder.backbone).to(self.device)
                self._seen = estimate_bn_statistics(
                    backbone, self.loader("train"), device=self.device, progress=self.progress
                )
            else:
                backbone = self.encoder.backbone.to(self.device)
            self._backbone = backbone
        return self._backbone

    @property
    def bn_statistics(self) -> str:
        """Where the BatchNorm statistics come from, as the result records say it."""
        if self.encoder.bn_statistics == "estimate":
            seen = self._seen
            if seen is None:  # not estimated (both splits cached): what the pass would see
                seen = len(self.train_set) if _has_batch_norm(self.encoder.backbone) else 0
            return f"estimated on train_data ({seen} images)"
        if self.encoder.bn_statistics == "initial":
            return "initial (mean 0, variance 1)"
        return "trained"

    def record_header(self, evaluator: str) -> dict[str, Any]:
        """The fields every feature evaluator's record starts with: what was measured, on what
        (call it after the evaluation, when the BatchNorm statistics are known)."""
        encoder = self.encoder
        return {
            "evaluator": evaluator,
            "encoder": encoder.spec,
            "method": encoder.method,
            "backbone": encoder.backbone.name,
            "train_data": self.data["train"],
            "val_data": self.data["val"],
            "image_size": encoder.image_size,
            "bn_statistics": self.bn_statistics,
        }

    def loader(self, split: str, *, batch_size: int | None = None) -> DataLoader:
        """The uint8 loader over ``split``'s images, in order (no shuffle)."""
        return DataLoader(
            self._dataset(split),
            batch_size=batch_size or self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    def features(self, split: str) -> FeatureSet:
        """``split``'s features: from the cache when an entry matches, else extracted (and
        cached). Extracted on the first call for a split only."""
        self._dataset(split)  # checks the name
        if split not in self._sets:
            self._sets[split] = (
                self._extract(split) if self._cache_dir is None else self._cached(split)
            )
        return self._sets[split]

    def _dataset(self, split: str) -> Dataset:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return self.train_set if split == "train" else self.val_set

    def _cropped(self, dataset: Dataset) -> Dataset:
        if self.transform["load_size"] == self.transform["crop_size"]:
            return dataset
        return CenterCropped(dataset, self.transform["crop_size"])

    def _extract(self, split: str) -> FeatureSet:
        features, labels = extract_features(
            self.backbone(), self.loader(split), device=self.device, progress=self.progress
        )
        return FeatureSet(features, labels, reused=False, path=None)

    def _cached(self, split: str) -> FeatureSet:
        folder = self._cache_dir / self._entry_key()[:20]
        key = self._split_key(split)
        found = self._read(folder, split, key)
        if found is not None:
            _note(f"features: reusing {split} cache {folder} ({len(found.labels)} images)")
            return found
        extracted = self._extract(split)
        try:
            self._write(folder, split, key, extracted)
        except OSError as error:
            warnings.warn(
                f"cannot write the feature cache {folder} ({error}); {split} is not cached",
                stacklevel=3,
            )
            return extracted
        _note(f"features: cached {split} in {folder}")
        return FeatureSet(extracted.features, extracted.labels, reused=False, path=folder)

    def _listing_key(self, split: str) -> str:
        if split not in self._listing_keys:
            digest = hashlib.sha256()
            for item in _listing(self.data[split], split, self._raw[split]):
                digest.update(json.dumps(item).encode() + b"\n")
            self._listing_keys[split] = digest.hexdigest()
        return self._listing_keys[split]

    def _entry_key(self) -> str:
        """What both splits' features depend on: the encoder and the transform."""
        identity = {"weights": self._weights, "bn_statistics": self.encoder.bn_statistics}
        if self.encoder.bn_statistics == "estimate":  # the statistics come from train's images
            identity["bn_data"] = self._listing_key("train")
        return _digest(
            {
                "format": FORMAT_VERSION,
                "encoder": identity,
                "transform": self.transform,
                "image_size": self.encoder.image_size,
            }
        )

    def _split_key(self, split: str) -> str:
        return _digest(
            {
                "entry": self._entry_key(),
                "split": split,
                "data": self._listing_key(split),
                # val is labelled by train's class numbers
                "label_classes": list(getattr(self.train_set, "classes", None) or []),
            }
        )

    def _read(self, folder: Path, split: str, key: str) -> FeatureSet | None:
        """The entry's ``split`` if its manifest line has ``key`` and its files fit it."""
        line = _read_manifest(folder).get("splits", {}).get(split)
        if not isinstance(line, dict) or line.get("key") != key:
            return None
        try:
            features = np.load(folder / f"{split}.features.npy", mmap_mode="c")
            labels = np.load(folder / f"{split}.labels.npy", mmap_mode="c")
            count, dim = len(self._dataset(split)), line["dim"]
            if features.dtype != np.float32 or features.shape != (count, dim):
                raise ValueError(f"features of shape {features.shape}, expected {(count, dim)}")
            if labels.dtype != np.int64 or labels.shape != (count,):
                raise ValueError(f"labels of shape {labels.shape}, expected {(count,)}")
        except _UNREADABLE as error:
            _note(f"features: unreadable {split} cache in {folder} ({error}); extracting again")
            return None
        return FeatureSet(torch.from_numpy(features), torch.from_numpy(labels), True, folder)

    def _write(self, folder: Path, split: str, key: str, extracted: FeatureSet) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        manifest = _read_manifest(folder)
        splits = manifest.get("splits") if isinstance(manifest.get("splits"), dict) else {}
        splits.pop(split, None)  # no line names the files while they are replaced
        _write_manifest(folder, self._manifest(splits))
        for kind, tensor in (("features", extracted.features), ("labels", extracted.labels)):
            atomic_write(
                folder / f"{split}.{kind}.npy", functools.partial(np.save, arr=tensor.numpy())
            )
        features = extracted.features
        splits[split] = {
            "key": key,
            "split": split,
            "data": self.data[split],
            "listing": self._listing_key(split),
            "num_images": int(features.shape[0]),
            "dim": int(features.shape[1]),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "sslvision_version": sslvision.__version__,
        }
        _write_manifest(folder, self._manifest(splits))

    def _manifest(self, splits: dict[str, Any]) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "key": self._entry_key(),
            "encoder": self.encoder.spec,
            "method": self.encoder.method,
            "backbone": self.encoder.backbone.name,
            "bn_statistics": self.encoder.bn_statistics,
            "weights": self._weights,
            "transform": self.transform,
            "image_size": self.encoder.image_size,
            "sslvision_version": sslvision.__version__,
            "splits": splits,
        }


def _weights_digest(encoder: Encoder) -> str:
    """sha256 of the backbone's name, pixel statistics and every state tensor (name, dtype,
    shape, bytes): equal for the same network whatever file or device it came from."""
    backbone = encoder.backbone
    digest = hashlib.sha256()
    pixels = {"mean": backbone.pixels.mean, "std": backbone.pixels.std}
    digest.update(json.dumps({"backbone": backbone.name, **pixels}).encode())
    for name, tensor in backbone.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"\n{name} {value.dtype} {tuple(value.shape)}\n".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _listing(spec: str, split: str, dataset: Dataset) -> Iterator[Any]:
    """What identifies a split's images, item by item (hashed as a stream: ImageNet is big)."""
    if isinstance(dataset, ImageFolderDataset):
        yield {"kind": "folder", "classes": dataset.classes}
        files = []
        for path, label in dataset.samples:
            stat = os.stat(path)
            files.append(
                (os.path.relpath(path, dataset.root), label, stat.st_size, stat.st_mtime_ns)
            )
        yield from sorted(files)
    elif isinstance(dataset, CIFARDataset):
        folder = (Path(spec.partition(":")[2]) / _CIFAR_FOLDERS[dataset.num_classes]).absolute()
        yield {"kind": "cifar", "root": str(folder), "split": split}
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            stat = path.stat()
            yield (str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns)
    else:
        yield {"kind": "spec", "spec": spec, "split": split, "length": len(dataset)}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _read_manifest(folder: Path) -> dict[str, Any]:
    """The entry's manifest; empty when missing or unreadable (every split is then a miss)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    atomic_write(folder / MANIFEST, lambda file: file.write(text))


def _note(message: str) -> None:
    """What the cache did, on stderr: stdout keeps the results (and ``--json``'s last line)."""
    print(message, file=sys.stderr)
