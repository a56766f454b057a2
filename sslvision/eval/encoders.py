"""The encoder an evaluator measures: a checkpoint, a random init, or published weights.

Every table can then show a method next to random init and supervised weights, evaluated by the
same code. A spec is a checkpoint path, ``random``, a torchvision weight name such as
``ResNet18_Weights.IMAGENET1K_V1``, or ``timm:<model>.<tag>`` for timm's pretrained weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision

from sslvision.backbones import Backbone, build_backbone
from sslvision.config import DataConfig
from sslvision.engine.checkpoint import backbone_state, is_training_checkpoint, read_state_file
from sslvision.engine.export import MODEL_PREFIX, read_export_pixels
from sslvision.errors import CheckpointError, ConfigError

RANDOM_BN = {"random": "estimate", "random-initial-bn": "initial"}


@dataclass
class Encoder:
    """A backbone ready for evaluation (it carries its pixel statistics) and where it came from."""

    backbone: Backbone
    spec: str
    image_size: int
    method: str
    # Where the BatchNorm statistics come from: "trained" (checkpoint or published weights),
    # "estimate" (the evaluator estimates them on its training split: the fair random baseline)
    # or "initial" (mean 0, variance 1: the un-normalised random network, for comparison).
    bn_statistics: str = "trained"


def load_encoder(
    spec: str,
    *,
    backbone: str = "resnet18",
    small_stem: bool = False,
    image_size: int | None = None,
    seed: int = 0,
) -> Encoder:
    """Build the encoder ``spec`` names.

    For a checkpoint, the backbone, stem, image size and normalisation come from its config;
    ``backbone``, ``small_stem`` and ``image_size`` apply to the other kinds. An exported backbone
    (``sslvision export``) is built as ``backbone``, its stem read from its first convolution.
    ``seed`` fixes the random init, so a table's random-init row is the same network every time:
    ``random`` gets BatchNorm statistics from the evaluator's training split (the fair baseline),
    ``random-initial-bn`` keeps the initial ones (the un-normalised network).
    """
    default_size = image_size or DataConfig.image_size
    if spec in RANDOM_BN:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_backbone(backbone, small_stem=small_stem)
        return Encoder(model, spec, default_size, "random", RANDOM_BN[spec])
    if Path(spec).suffix == ".pt" or Path(spec).is_file():
        state = read_state_file(spec)
        if not is_training_checkpoint(state):
            model = _exported_backbone(spec, state, backbone)
            return Encoder(model, spec, default_size, "exported")
        cfg = state["config"]
        aug = cfg["augment"]
        model = build_backbone(
            cfg["model"]["backbone"],
            small_stem=cfg["model"]["small_stem"],
            mean=aug["mean"],
            std=aug["std"],
        )
        model.load_state_dict(backbone_state(state))
        size = image_size or cfg["data"]["image_size"]
        return Encoder(model, spec, size, cfg["method"]["name"])
    if spec.startswith("timm:"):
        model = build_backbone(spec, small_stem=small_stem, weights="pretrained")
        return Encoder(model, spec, default_size, "supervised")
    if "_Weights." in spec:
        enum_name, _, member = spec.partition(".")
        enum = getattr(torchvision.models, enum_name, None)
        if enum is None or member not in enum.__members__:
            valid = [f"{enum_name}.{m}" for m in enum.__members__] if enum else []
            choices = f"Valid choices: {', '.join(valid)}." if valid else "No such enum."
            raise ConfigError(f"unknown torchvision weights '{spec}'. {choices}")
        weights = enum[member]
        name = spec.split("_Weights.")[0].lower()
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
        try:
            model = build_backbone(name, small_stem=small_stem, weights=spec)
        except (OSError, RuntimeError) as error:  # offline: urllib's URLError is an OSError
            if cached.is_file():
                raise CheckpointError(f"cannot read {spec} from {cached}: {error}") from None
            raise CheckpointError(
                f"the weights {spec} are not in the local torch hub cache ({cached.parent}, under "
                f"$TORCH_HOME) and cannot be downloaded: {error}"
            ) from None
        return Encoder(model, spec, default_size, "supervised")
    raise ConfigError(
        f"cannot read encoder '{spec}': expected a checkpoint file (.pt), 'random', a torchvision "
        f"weight name like 'ResNet18_Weights.IMAGENET1K_V1', or 'timm:<model>.<tag>'"
    )


def _exported_backbone(path: str, state: object, name: str) -> Backbone:
    """The ``name`` backbone with the weights of an ``sslvision export`` file (library key names).

    A torchvision ResNet's stem is read from ``conv1.weight``: 3x3 is ``model.small_stem``'s; its
    pixel statistics from the file written beside it (ImageNet's for exports made before that).
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} is neither an sslvision checkpoint nor an exported backbone (tensors by name)"
        )
    conv1 = state.get("conv1.weight")
    small_stem = conv1 is not None and tuple(conv1.shape[-2:]) == (3, 3)
    pixels = read_export_pixels(path)
    model = build_backbone(name, small_stem=small_stem, mean=pixels.mean, std=pixels.std)
    missing, unexpected = model.load_state_dict(
        {MODEL_PREFIX + key: value for key, value in state.items()}, strict=False
    )
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit --backbone {name}: {len(missing)} missing and "
            f"{len(unexpected)} unexpected tensors (e.g. {(missing + unexpected)[:3]}); pass the "
            "backbone it was exported from"
        )
    return model
