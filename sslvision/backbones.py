"""Backbones by name from torchvision or timm, with pooled and dense outputs.

``resnet18`` names a torchvision model; ``timm:<name>`` a timm one. Every backbone exposes
``feature_dim`` (the pooled feature size), ``forward`` (pooled features, the thing evaluators use)
and ``forward_features`` (the last feature map, the thing dense methods use). It also carries the
pixel statistics its inputs are normalised with (``pixels``), as timm's ``pretrained_cfg`` does:
weights only fit inputs normalised as in their training, so evaluators read them from here.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchvision
from torch import Tensor, nn

from sslvision.config import IMAGENET_MEAN, IMAGENET_STD
from sslvision.errors import ConfigError

TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class PixelStatistics:
    """The per-channel mean and std (of pixels in [0, 1]) an encoder's inputs are normalised by."""

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"mean and std need one value per channel, got {len(self.mean)} and {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {list(self.std)}")

    def normalise(self, images: Tensor, device: torch.device | str) -> Tensor:
        """uint8 images -> float32 on ``device``, scaled to [0, 1] and normalised per channel."""
        shape = (1, -1, 1, 1)
        channel_mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(shape)
        channel_std = torch.tensor(self.std, dtype=torch.float32, device=device).view(shape)
        pixels = images.to(device, non_blocking=True).float().div_(255)
        return pixels.sub_(channel_mean).div_(channel_std)


class Backbone(nn.Module):
    """A feature extractor with a uniform interface over torchvision and timm models."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        feature_dim: int,
        pixels: PixelStatistics | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.model = model
        self.feature_dim = feature_dim
        self.pixels = pixels or PixelStatistics()

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature map, (N, C, h, w) for CNNs."""
        if hasattr(self.model, "forward_features"):  # timm
            return self.model.forward_features(x)
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer4(m.layer3(m.layer2(m.layer1(x))))

    def pool(self, feature_map: Tensor) -> Tensor:
        """Pooled features from a feature map given by :meth:`forward_features`."""
        if hasattr(self.model, "forward_head"):  # timm
            return self.model.forward_head(feature_map, pre_logits=True)
        return torch.flatten(self.model.avgpool(feature_map), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.forward_features(x))


def apply_small_stem(model: nn.Module, name: str) -> None:
    """CIFAR-style stem: a 3x3 stride-1 first conv and no max-pool (keeps 32 px maps useful)."""
    conv = getattr(model, "conv1", None)
    if not isinstance(conv, nn.Conv2d) or not hasattr(model, "maxpool"):
        raise ConfigError(
            f"model.small_stem is only supported for ResNet-style models, not '{name}'"
        )
    model.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()


def _torchvision_model(name: str, weights: str | None) -> tuple[nn.Module, int, PixelStatistics]:
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ConfigError(
            f"unknown torchvision backbone '{name}'. Available ResNet-style names: "
            f"{', '.join(n for n in available if 'resnet' in n or 'resnext' in n)}; "
            f"for timm models write 'timm:<name>'."
        )
    model = torchvision.models.get_model(name, weights=weights)
    if not hasattr(model, "fc") or not hasattr(model, "layer4"):
        raise ConfigError(f"torchvision backbone '{name}' is not ResNet-style; use 'timm:{name}'")
    feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    if weights is None:
        return model, feature_dim, PixelStatistics()
    transforms = torchvision.models.get_model_weights(name).verify(weights).transforms()
    return model, feature_dim, PixelStatistics(transforms.mean, transforms.std)


def _timm_model(name: str, pretrained: bool) -> tuple[nn.Module, int, PixelStatistics]:
    import timm

    if ":" not in name and not timm.is_model(name):  # "hf-hub:<repo>" names are timm's to resolve
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(f'timm:{c}' for c in close)}?" if close else ""
        raise ConfigError(f"unknown timm model '{name}'.{hint} timm.list_models() lists them all.")
    model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    dim = getattr(model, "head_hidden_size", None) or model.num_features
    if not pretrained:
        return model, dim, PixelStatistics()
    # The normalisation the weights were trained with: some use 0.5, not ImageNet's statistics.
    trained_on = model.pretrained_cfg
    return model, dim, PixelStatistics(trained_on["mean"], trained_on["std"])


def build_backbone(
    name: str,
    *,
    small_stem: bool = False,
    weights: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Backbone:
    """Build a backbone by name.

    ``weights`` is a torchvision weight name (``IMAGENET1K_V1``) for torchvision models, or any
    non-empty value to load timm's pretrained weights; None gives a random init. The input
    statistics are ``mean`` and ``std`` when given (a pretraining config's), else the published
    weights' own, else ImageNet's.
    """
    if name.startswith(TIMM_PREFIX):
        model, dim, pixels = _timm_model(name[len(TIMM_PREFIX) :], pretrained=weights is not None)
    else:
        model, dim, pixels = _torchvision_model(name, weights)
    if small_stem:
        apply_small_stem(model, name)
    if mean is not None or std is not None:
        pixels = PixelStatistics(mean or pixels.mean, std or pixels.std)
    return Backbone(name, model, dim, pixels)
