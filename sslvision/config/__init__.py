"""Typed run configuration: YAML recipes plus dotted ``key=value`` overrides, validated.

Every section is a dataclass, so a recipe is checked before any work starts: an unknown key names
itself and the closest valid keys, a wrong type names the key and the type it expects, a value out
of range or not among the choices names the key and what it allows. The ``method`` section's
schema depends on ``method.name``: each method registers its own dataclass.

The settings that name a registered thing (``method.name``, ``data.dataset``, ``optim.name``) are
checked against :mod:`sslvision.registry`, which imports the defining package by name when a
value is looked up. So importing this module stays light (no torch, no ``sslvision.methods``),
while the choices have one source: the members' own registrations.
"""

from __future__ import annotations

import dataclasses
import difflib
import operator
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sslvision.config.views import FieldError, ViewGroup
from sslvision.errors import ConfigError
from sslvision.registry import DATASETS, METHOD_CONFIGS, OPTIMIZERS, Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LR_SCALINGS = ("linear", "sqrt", "none")
PRECISIONS = ("no", "bf16", "fp16")


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans: only true/false, so ``no`` stays a word.

    YAML 1.1 reads yes/no/on/off as booleans, which turned ``train.precision=no`` into False.
    """


_BOOL_TAG = "tag:yaml.org,2002:bool"
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _read_yaml(text: Any) -> Any:
    """YAML text or a stream, read with :class:`_Yaml12Loader`."""
    return yaml.load(text, Loader=_Yaml12Loader)


@dataclass
class DataConfig:
    """Where the training images come from and how they are decoded."""

    dataset: str = "synthetic"  # a name in sslvision.registry.DATASETS
    path: str = ""  # folder: the split directory; cifar: the root; synthetic: unused
    split: str = "train"
    image_size: int = 32  # squash: every image is resized to this square before its crops
    # squash: crops from the image resized to image_size (square data: CIFAR, 64 px sets);
    # original: each view's crop drawn on the image's own size, as the papers do (folder data)
    crop: str = "squash"
    # workers: the DataLoader workers decode and cut the crops; device: they only read the files'
    # bytes, decoded in one batch on the training device (nvJPEG on a GPU); needs crop=original
    decode: str = "workers"
    classes: str = ""  # a bundled class list (e.g. imagenet100) or a file of wnids; "" keeps all
    download: bool = False  # cifar only: fetch the archive when it is missing
    skip_corrupt: bool = False  # skip and count unreadable images instead of stopping
    num_images: int = 5000  # synthetic only
    num_workers: int = 2


@dataclass
class AugmentConfig:
    """The views a method sees; empty ``views`` means the method's recipe at ``size``."""

    recipe: str = ""  # simclr | mocov2 | byol; "" takes the method's default recipe
    size: int = 32
    views: list[ViewGroup] = field(default_factory=list)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass
class ModelConfig:
    """The backbone: a torchvision name (``resnet18``) or a timm one (``timm:resnet18``)."""

    backbone: str = "resnet18"
    small_stem: bool = False  # 3x3 stride-1 first conv and no max-pool, for 32-64 px images


@dataclass
class MethodConfig:
    """Base of every method's own config dataclass; ``name`` selects the method."""

    name: str = "simclr"


@dataclass
class OptimConfig:
    """Optimiser and schedule; the learning rate is ``base_lr`` scaled by the global batch."""

    name: str = "sgd"  # a name in sslvision.registry.OPTIMIZERS
    base_lr: float = 0.3
    lr_scaling: str = "linear"  # linear: base_lr * batch / 256 | sqrt | none
    weight_decay: float = 1e-6
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    trust_coefficient: float = 0.001  # LARS eta
    exclude_bias_and_norm: bool = True  # no weight decay and no LARS adaptation for them
    warmup_epochs: float = 10.0
    min_lr_ratio: float = 0.0  # cosine ends at base lr x this


@dataclass
class TrainConfig:
    """The engine's settings."""

    epochs: int = 100
    max_steps: int = 0  # stop after this many optimiser steps (0: run all epochs)
    batch_size: int = 256  # per process
    grad_accum_steps: int = 1
    precision: str = "no"  # one of PRECISIONS
    channels_last: bool = True
    compile: bool = False  # torch.compile the backbone (eager where a part cannot compile)
    grad_clip: float = 0.0  # max gradient norm, 0 disables
    log_every: int = 10
    deterministic: bool = False  # deterministic kernels (bitwise resume on CPU)
    progress_bar: bool = True


@dataclass
class CheckpointConfig:
    """When checkpoints are written: ``last.pt`` always, plus a kept copy every N epochs."""

    save_every_steps: int = 0  # also refresh last.pt every N steps (0: at epoch ends only)
    keep_every_epochs: int = 10  # keep epoch_XXXX.pt every N epochs (0: never)


@dataclass
class MonitorConfig:
    """What pretraining measures on labels (all off by default): kNN accuracy probed on a fixed
    labelled subset, and an online linear classifier trained on the training batches' labels."""

    knn_every: int = 0  # probe every N optimiser steps and at the end (0: off)
    train_data: str = ""  # the bank, as `sslvision knn --train-data` takes it
    val_data: str = ""  # the images to classify, as `sslvision knn --val-data` takes it
    max_train: int = 5000  # a seeded subset of each split, decoded once and kept in memory; 0: all
    max_val: int = 2000
    k: int = 20
    temperature: float = 0.07
    online_linear: bool = False  # a linear head on the detached features of each batch's view 0
    online_linear_lr: float = 0.1  # its SGD learning rate (momentum 0.9, no weight decay)


@dataclass
class Config:
    """A whole pretraining run."""

    name: str = "run"
    output_dir: str = "runs"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _unknown_key_error(key: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"unknown config key '{key}'.{hint} Valid keys here: {', '.join(valid)}.")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in that type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _convert(value, next(a for a in args if a is not type(None)), key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' expects a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' expects a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(
                    f"config key '{key}' expects {len(args)} values, got {len(value)}: {value!r}"
                )
            return tuple(
                _convert(v, a, f"{key}.{i}")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        items = [_convert(v, item, f"{key}.{i}") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads exponents without a dot (1e-6) as strings
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(
            f"config key '{key}' expects {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by name."""
    if cls is MethodConfig or (isinstance(cls, type) and issubclass(cls, MethodConfig)):
        cls = METHOD_CONFIGS.get(str(data.get("name", MethodConfig.name)))
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key_error(prefix + str(key), names)
        kwargs[key] = _convert(value, hints[key], prefix + key)
    for name in names:  # absent sections too: the method section needs its method's own schema
        if name not in kwargs and dataclasses.is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], {}, f"{prefix}{name}.")
    try:
        return cls(**kwargs)
    except FieldError as error:  # a __post_init__ check knows its field, not the whole key
        raise ConfigError(f"config key '{prefix}{error.field}' {error.problem}") from None


# The lowest value of each numeric setting; validate() checks them before any work starts.
_MINIMUM: dict[str, int] = {
    "data.image_size": 1,
    "data.num_images": 1,
    "data.num_workers": 0,
    "augment.size": 1,
    "optim.base_lr": 0,
    "optim.weight_decay": 0,
    "optim.momentum": 0,
    "optim.warmup_epochs": 0,
    "optim.min_lr_ratio": 0,
    "train.epochs": 1,
    "train.max_steps": 0,
    "train.batch_size": 1,
    "train.grad_accum_steps": 1,
    "train.grad_clip": 0,
    "train.log_every": 1,
    "checkpoint.save_every_steps": 0,
    "checkpoint.keep_every_epochs": 0,
}  # the monitor section is checked by its monitors, in sslvision.engine.callbacks
_CHOICES: dict[str, tuple[str, ...]] = {
    "data.crop": ("squash", "original"),
    "data.decode": ("workers", "device"),
    "optim.lr_scaling": LR_SCALINGS,
    "train.precision": PRECISIONS,
}
_REGISTERED: dict[str, Registry] = {"data.dataset": DATASETS, "optim.name": OPTIMIZERS}


def validate(config: Config) -> None:
    """Check value ranges and choices, so that a bad setting stops a run before data is read."""
    for key, minimum in _MINIMUM.items():
        value = operator.attrgetter(key)(config)
        if not value >= minimum:  # also refuses NaN
            raise ConfigError(f"config key '{key}' must be >= {minimum}, got {value!r}")
    for key, choices in _CHOICES.items():
        value = operator.attrgetter(key)(config)
        if value not in choices:
            raise ConfigError(f"unknown {key} '{value}'. Valid choices: {', '.join(choices)}.")
    for key, registry in _REGISTERED.items():
        registry.get(operator.attrgetter(key)(config))  # an unknown name raises, naming the choices
    data = config.data
    if data.decode == "device" and data.crop != "original":
        raise ConfigError(
            "data.decode=device cuts each view's crop from the decoded original: it needs "
            f"data.crop=original, got data.crop='{data.crop}'"
        )
    if data.decode == "device" and data.skip_corrupt:
        raise ConfigError(
            "data.skip_corrupt replaces an unreadable image in the workers, which only read "
            "bytes with data.decode=device: use data.decode=workers to skip corrupt images"
        )


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict/list/scalar form (for YAML files and checkpoints)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override '{dotted}': '{where}' is not an index of the list")
            node = node[int(part)]
            continue
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"override '{dotted}': '{where}' is a value, not a section")
        node = child
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override '{dotted}': '{last}' is not an index of the list")
        node[int(last)] = value
    else:
        node[last] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["optim.base_lr=0.5", ...]`` -> ``[("optim.base_lr", 0.5), ...]``, values read as YAML."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        parsed.append((key.strip(), _read_yaml(raw) if raw.strip() else ""))
    return parsed


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """Validate a nested mapping (plus overrides) into a :class:`Config`."""
    tree = _read_yaml(yaml.safe_dump(data or {}))  # deep copy, plain types only
    for key, value in parse_overrides(overrides or []):
        _set_dotted(tree, key, value)
    config = _build(Config, tree)
    validate(config)
    return config


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe (the defaults when ``path`` is None) and apply ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        with path.open() as f:
            loaded = _read_yaml(f)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded or {}
    return config_from_dict(data, overrides)


def config_yaml(config: Config) -> str:
    """The resolved config as YAML text, every key in schema order (what ``save_config`` writes)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_config(config: Config, path: str | Path, notes: Sequence[str] = ()) -> None:
    """Write the resolved config as YAML, after ``notes`` as comment lines (what the run
    derived from it, such as the global batch)."""
    header = "".join(f"# {note}\n" for note in notes)
    Path(path).write_text(header + config_yaml(config))
