"""Methods by name: ``build_method(cfg)`` is the one way the engine and tools get a method."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from sslvision.backbones import build_backbone
from sslvision.config import MethodConfig
from sslvision.errors import ConfigError

if TYPE_CHECKING:
    from sslvision.config import Config
    from sslvision.methods.base import Method

_METHOD_MODULES = ("simclr", "mocov2", "mocov3", "byol", "swav", "densecl", "pixpro")
_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator that makes a method buildable by its ``name``."""
    _METHODS[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    for module in _METHOD_MODULES:
        importlib.import_module(f"sslvision.methods.{module}")
    return sorted(_METHODS)


def method_class(name: str) -> type[Method]:
    valid = available_methods()
    if name not in valid:
        raise ConfigError(f"unknown method.name '{name}'. Valid choices: {', '.join(valid)}.")
    return _METHODS[name]


def method_config_class(name: str) -> type[MethodConfig]:
    return method_class(name).config_class


def build_method(cfg: Config) -> Method:
    """Build the configured method around a freshly built backbone."""
    backbone = build_backbone(cfg.model.backbone, small_stem=cfg.model.small_stem)
    return method_class(cfg.method.name)(cfg.method, backbone)
