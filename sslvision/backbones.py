"""Backbones by name from torchvision or timm, with pooled and dense outputs.

``resnet18`` names a torchvision model; ``timm:<name>`` a timm one. Every backbone exposes
``feature_dim`` (the pooled feature size), ``forward`` (pooled features, the thing evaluators use)
and ``forward_features`` (the last feature map, the thing dense methods use).
"""

from __future__ import annotations

import difflib

import torch
import torchvision
from torch import Tensor, nn

from sslvision.errors import ConfigError

TIMM_PREFIX = "timm:"


class Backbone(nn.Module):
    """A feature extractor with a uniform interface over torchvision and timm models."""

    def __init__(self, name: str, model: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.name = name
        self.model = model
        self.feature_dim = feature_dim

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


def _torchvision_model(name: str, weights: str | None) -> tuple[nn.Module, int]:
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
    return model, feature_dim


def _timm_model(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    import timm

    if ":" not in name and not timm.is_model(name):  # "hf-hub:<repo>" names are timm's to resolve
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(f'timm:{c}' for c in close)}?" if close else ""
        raise ConfigError(f"unknown timm model '{name}'.{hint} timm.list_models() lists them all.")
    model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    return model, getattr(model, "head_hidden_size", None) or model.num_features


def build_backbone(name: str, *, small_stem: bool = False, weights: str | None = None) -> Backbone:
    """Build a backbone by name.

    ``weights`` is a torchvision weight name (``IMAGENET1K_V1``) for torchvision models, or any
    non-empty value to load timm's pretrained weights; None gives a random init.
    """
    if name.startswith(TIMM_PREFIX):
        model, dim = _timm_model(name[len(TIMM_PREFIX) :], pretrained=weights is not None)
    else:
        model, dim = _torchvision_model(name, weights)
    if small_stem:
        apply_small_stem(model, name)
    return Backbone(name, model, dim)
