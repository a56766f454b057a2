"""The encoder an evaluator measures: a checkpoint, a random init, or published weights.

Every table can then show a method next to random init and supervised weights, evaluated by the
same code. A spec is a checkpoint path, ``random``, a torchvision weight name such as
``ResNet18_Weights.IMAGENET1K_V1``, or ``timm:<model>.<tag>`` for timm's pretrained weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from sslvision.backbones import Backbone, build_backbone
from sslvision.config import IMAGENET_MEAN, IMAGENET_STD, DataConfig
from sslvision.engine.checkpoint import backbone_state, load_checkpoint


@dataclass
class Encoder:
    """A backbone ready for evaluation and what is needed to feed it."""

    backbone: Backbone
    spec: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    method: str


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
    ``backbone``, ``small_stem`` and ``image_size`` apply to the other kinds. ``seed`` fixes the
    random init, so a table's random-init row is the same network every time.
    """
    default_size = image_size or DataConfig.image_size
    if spec == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_backbone(backbone, small_stem=small_stem)
        return Encoder(model, spec, default_size, IMAGENET_MEAN, IMAGENET_STD, "random")
    if Path(spec).suffix == ".pt" or Path(spec).is_file():
        state = load_checkpoint(spec)
        cfg = state["config"]
        model = build_backbone(cfg["model"]["backbone"], small_stem=cfg["model"]["small_stem"])
        model.load_state_dict(backbone_state(state))
        size = image_size or cfg["data"]["image_size"]
        aug = cfg["augment"]
        return Encoder(
            model, spec, size, tuple(aug["mean"]), tuple(aug["std"]), cfg["method"]["name"]
        )
    if spec.startswith("timm:"):
        model = build_backbone(spec, small_stem=small_stem, weights="pretrained")
        # The normalisation the model was trained with: some use 0.5, not ImageNet's statistics.
        trained_on = model.model.pretrained_cfg
        mean, std = tuple(trained_on["mean"]), tuple(trained_on["std"])
        return Encoder(model, spec, default_size, mean, std, "supervised")
    if "_Weights." in spec:
        weights = torchvision.models.get_weight(spec)
        name = spec.split("_Weights.")[0].lower()
        model = build_backbone(name, small_stem=small_stem, weights=spec)
        mean, std = weights.transforms().mean, weights.transforms().std
        return Encoder(model, spec, default_size, tuple(mean), tuple(std), "supervised")
    raise ValueError(
        f"cannot read encoder '{spec}': expected a checkpoint file (.pt), 'random', a torchvision "
        f"weight name like 'ResNet18_Weights.IMAGENET1K_V1', or 'timm:<model>.<tag>'"
    )
