"""Methods by name: ``build_method(cfg)`` is the one way the engine and tools get a method.

``@register_method`` puts a method class into :data:`sslvision.registry.METHODS` and its config
dataclass into :data:`sslvision.registry.METHOD_CONFIGS`, where :mod:`sslvision.config` finds the
``method`` section's schema without importing this package. Every module of
``sslvision.methods`` is imported when a name is first looked up, so a new method is one module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sslvision.backbones import build_backbone
from sslvision.registry import METHOD_CONFIGS, METHODS

if TYPE_CHECKING:
    from sslvision.config import Config
    from sslvision.methods.base import Method


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator that makes a method, and its ``config_class``, buildable by its ``name``."""
    METHOD_CONFIGS.register(cls.name)(cls.config_class)
    return METHODS.register(cls.name)(cls)


def available_methods() -> list[str]:
    """The registered methods' names, sorted."""
    return sorted(METHODS.names())


def method_class(name: str) -> type[Method]:
    """The method class registered as ``name``; an unknown name is a ConfigError."""
    return METHODS.get(name)


def build_method(cfg: Config) -> Method:
    """Build the configured method around a freshly built backbone, which normalises its inputs
    with the pretraining config's pixel statistics."""
    model, augment = cfg.model, cfg.augment
    backbone = build_backbone(
        model.backbone, small_stem=model.small_stem, mean=augment.mean, std=augment.std
    )
    return method_class(cfg.method.name)(cfg.method, backbone)
