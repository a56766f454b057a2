"""Export a pretrained backbone for use outside sslvision: a plain state dict in the key names of
the library that defines the model (torchvision or timm), so that

    model = torchvision.models.resnet50()
    model.load_state_dict(torch.load("backbone.pt", weights_only=True), strict=False)

loads it with only the classifier (``fc``) left missing, and a timm model created with
``num_classes=0`` loads it strictly. The file holds tensors only, written atomically. The pixel
statistics the backbone was trained on (its config's ``augment.mean``/``std``) go into a second
file beside it (``last.backbone.pixels.pt``), as timm keeps them in its ``pretrained_cfg``, so
that evaluators normalise as in pretraining.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sslvision.backbones import TIMM_PREFIX, PixelStatistics
from sslvision.engine.checkpoint import (
    atomic_save,
    backbone_state,
    load_checkpoint,
    read_state_file,
)
from sslvision.errors import ConfigError

MODEL_PREFIX = "model."  # sslvision.backbones.Backbone keeps the library's model as .model


def default_export_path(checkpoint: str | Path) -> Path:
    """``run/checkpoints/last.pt`` -> ``run/checkpoints/last.backbone.pt``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.backbone.pt")


def pixels_path(export: str | Path) -> Path:
    """``last.backbone.pt`` -> ``last.backbone.pixels.pt``: where its pixel statistics are."""
    export = Path(export)
    return export.with_name(f"{export.stem}.pixels.pt")


def read_export_pixels(export: str | Path) -> PixelStatistics:
    """The pixel statistics written beside ``export``; ImageNet's for an export made without."""
    path = pixels_path(export)
    if not path.is_file():
        return PixelStatistics()
    stats = read_state_file(path)
    return PixelStatistics(stats["mean"], stats["std"])


def export_backbone(checkpoint: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Write the online backbone of ``checkpoint`` to ``out``; the export's record.

    The record names the model and how to build it for loading (``load_with``); a backbone trained
    with ``model.small_stem`` has a 3x3 first convolution and no max-pool, which the library's
    stock model must be given before it loads.
    """
    out = Path(out) if out else default_export_path(checkpoint)
    if out.resolve() == Path(checkpoint).resolve():
        raise ConfigError(
            f"--out {out} is the checkpoint being exported; writing there would replace the "
            "training checkpoint with a backbone-only file. Choose another --out."
        )
    state = load_checkpoint(checkpoint)
    weights = {key.removeprefix(MODEL_PREFIX): v for key, v in backbone_state(state).items()}
    model_cfg = state["config"]["model"]
    name = model_cfg["backbone"]
    if name.startswith(TIMM_PREFIX):
        load_with = f"timm.create_model('{name[len(TIMM_PREFIX) :]}', num_classes=0)"
    else:
        load_with = f"torchvision.models.{name}() with strict=False (fc stays untrained)"
    augment = state["config"]["augment"]
    pixels = PixelStatistics(augment["mean"], augment["std"])
    atomic_save(weights, out)
    atomic_save({"mean": list(pixels.mean), "std": list(pixels.std)}, pixels_path(out))
    return {
        "command": "export",
        "checkpoint": str(checkpoint),
        "out": str(out),
        "method": state["config"]["method"]["name"],
        "backbone": name,
        "small_stem": model_cfg["small_stem"],
        "step": state.get("step"),
        "tensors": len(weights),
        "pixels": str(pixels_path(out)),
        "load_with": load_with,
    }
