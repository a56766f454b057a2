"""The linear-probe protocols of the papers, by name, with every setting overridable.

The full-size presets are the authors' ImageNet-1k recipes:

- ``mocov2``: MoCo v1/v2 ``main_lincls.py``: 100 epochs, batch 256, SGD lr 30 (not scaled),
  momentum 0.9, weight decay 0, lr x0.1 at epochs 60 and 80 (``milestones`` 0.6 and 0.8 of the
  epochs, so that ``epochs=30`` steps down at 18 and 24).
- ``mocov3``: MoCo v3 (ResNet-50): 90 epochs, batch 1024, SGD momentum 0.9, wd 0,
  lr 0.1 x batch/256, cosine.
- ``simclr``: SimCLR: 90 epochs, batch 4096, Nesterov momentum 0.9, lr 0.1 x batch/256,
  wd 1e-6, cosine, no warm-up.
- ``mae``: MAE ``main_linprobe.py``: 90 epochs, batch 16384, LARS, base lr 0.1 x batch/256, wd 0,
  10 warm-up epochs then cosine, ``BatchNorm1d(affine=False, eps=1e-6)`` before the head.

All train on RandomResizedCrop 224 + flip and evaluate on resize 256 + centre crop 224, with the
backbone frozen in eval mode. The ``-small`` versions keep each recipe's optimiser, schedule and
learning rate per image but are scaled for small data sets and images (Imagenette-64, CIFAR):

- the image size is the encoder's (its pretraining size), and evaluation takes the whole image
  (``crop_ratio`` 1): a 256 -> 224 centre crop of a 64 px image would throw away an eighth of an
  already small picture;
- the batch is at most 256, with the recipe's learning-rate scaling rule applied to it: a batch
  of 16384 is more than Imagenette's whole training split and would leave no full step.

``fast`` trains on features extracted once (no augmentation) and cached, so that the sweep of
many heads, logistic regression and kNN all read the same file: minutes instead of hours.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import yaml

from sslvision.errors import ConfigError

# DINOv2's 13 learning rates (x batch/256), extended up to MoCo's 30: ResNet features are not
# normalised as a ViT's are, and their best learning rate is orders of magnitude larger.
SWEEP_LRS = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1)
SWEEP_LRS_RESNET = (*SWEEP_LRS, 0.3, 1.0, 3.0, 10.0, 30.0)
SMALL_BATCH = 256


@dataclass(frozen=True)
class LinearProtocol:
    """Every setting of a linear-probe run (recorded with its result)."""

    name: str
    epochs: int
    batch_size: int
    lr: float  # base learning rate, scaled by lr_scaling
    lr_scaling: str = "linear"  # "linear": lr x batch/256 | "none"
    optimizer: str = "sgd"  # "sgd" | "lars"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "cosine"  # "cosine" | "step" (lr x0.1 at each of milestones)
    milestones: tuple[float, ...] = ()  # step schedule: fractions of the epochs
    warmup_epochs: float = 0.0
    batch_norm: bool = False  # parameter-free BatchNorm before the head (MAE)
    augment: bool = True  # RandomResizedCrop + flip on the device; False: the eval images
    features: str = "online"  # "online": backbone forward per batch | "cached": extracted once
    crop_scale: tuple[float, float] = (0.08, 1.0)
    image_size: int = 224  # 0: the encoder's own
    crop_ratio: float = 0.875  # evaluation: resize image_size / crop_ratio, centre crop
    precision: str = "no"  # "bf16": the frozen backbone runs under bf16 autocast
    sweep_lrs: tuple[float, ...] = SWEEP_LRS_RESNET  # --sweep: base learning rates
    sweep_weight_decays: tuple[float, ...] = (0.0, 1e-6)
    sweep_batch_norm: tuple[bool, ...] = (False, True)
    log_every: int = 50

    def peak_lr(self, lr: float | None = None) -> float:
        """``lr`` (default: the protocol's) scaled by the batch size as the protocol says."""
        base = self.lr if lr is None else lr
        return base * self.batch_size / 256 if self.lr_scaling == "linear" else base

    def record(self) -> dict[str, Any]:
        """The settings as flat record fields: ``protocol`` (the name), ``protocol_<setting>``."""
        settings = dataclasses.asdict(self)
        name = settings.pop("name")
        return {"protocol": name, **{f"protocol_{key}": value for key, value in settings.items()}}


_PAPER = dict(image_size=224, crop_ratio=0.875, augment=True)
PRESETS: dict[str, LinearProtocol] = {
    "mocov2": LinearProtocol(
        "mocov2",
        epochs=100,
        batch_size=256,
        lr=30.0,
        lr_scaling="none",
        schedule="step",
        milestones=(0.6, 0.8),  # epochs 60 and 80 of 100, and as much of a shorter run
        **_PAPER,
    ),
    "mocov3": LinearProtocol("mocov3", epochs=90, batch_size=1024, lr=0.1, **_PAPER),
    "simclr": LinearProtocol(
        "simclr", epochs=90, batch_size=4096, lr=0.1, nesterov=True, weight_decay=1e-6, **_PAPER
    ),
    "mae": LinearProtocol(
        "mae",
        epochs=90,
        batch_size=16384,
        lr=0.1,
        optimizer="lars",
        warmup_epochs=10,
        batch_norm=True,
        **_PAPER,
    ),
}
for _name, _paper in list(PRESETS.items()):
    _batch = min(_paper.batch_size, SMALL_BATCH)
    # lr_scaling "none" (MoCo v2's lr 30) was tuned for batch 256, which the small batch keeps.
    PRESETS[f"{_name}-small"] = replace(
        _paper, name=f"{_name}-small", batch_size=_batch, image_size=0, crop_ratio=1.0
    )
PRESETS["fast"] = LinearProtocol(
    "fast",
    epochs=100,
    batch_size=256,
    lr=0.1,
    augment=False,
    features="cached",
    image_size=0,
    crop_ratio=1.0,
)
CHOICES = {
    "lr_scaling": ("linear", "none"),
    "optimizer": ("sgd", "lars"),
    "schedule": ("cosine", "step"),
    "features": ("online", "cached"),
    "precision": ("no", "bf16"),
}


def get_protocol(name: str, overrides: Sequence[str] = ()) -> LinearProtocol:
    """The preset ``name`` with ``key=value`` overrides (values parsed as YAML), checked."""
    if name not in PRESETS:
        raise ConfigError(f"unknown protocol '{name}'. Valid choices: {', '.join(PRESETS)}.")
    protocol = PRESETS[name]
    keys = [f.name for f in dataclasses.fields(LinearProtocol) if f.name != "name"]
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or key not in keys:
            raise ConfigError(
                f"unknown linear-probe setting '{key}' (in '{item}'); write key=value with one "
                f"of: {', '.join(keys)}"
            )
        value = yaml.safe_load(text)
        changes[key] = tuple(value) if isinstance(value, list) else value
    protocol = replace(protocol, **changes)
    _check(protocol)
    return protocol


def _check(protocol: LinearProtocol) -> None:
    for key, choices in CHOICES.items():
        if getattr(protocol, key) not in choices:
            raise ConfigError(
                f"linear-probe setting {key}={getattr(protocol, key)!r}. Valid choices: "
                f"{', '.join(choices)}."
            )
    positive = ("epochs", "batch_size", "lr", "log_every")
    for key in positive:
        value = getattr(protocol, key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"linear-probe setting {key} must be a number > 0, got {value!r}")
    if not 0 < protocol.crop_ratio <= 1:
        raise ConfigError(f"crop_ratio must be in (0, 1], got {protocol.crop_ratio}")
    if protocol.features == "cached" and protocol.augment:
        raise ConfigError(
            "features=cached trains on features extracted once, so it cannot augment: set "
            "augment=false, or features=online to augment every batch"
        )
    if protocol.schedule == "step" and not protocol.milestones:
        raise ConfigError("schedule=step needs milestones, e.g. milestones=[0.6, 0.8]")
    if any(not 0 < m < 1 for m in protocol.milestones):
        raise ConfigError(
            f"milestones {list(protocol.milestones)} are fractions of the run: each in (0, 1)"
        )
