"""Every shipped recipe builds its method and passes the method's view check."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslvision.config import load_config
from sslvision.engine.trainer import resolve_views
from sslvision.methods.registry import available_methods, build_method, method_class

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "configs").glob("*/*.yaml"))


def test_every_method_has_recipes() -> None:
    assert {p.parent.name for p in RECIPES} == set(available_methods())


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_builds_its_method(recipe: Path) -> None:
    cfg = load_config(recipe)
    method = build_method(cfg)
    assert isinstance(method, method_class(cfg.method.name))
    method_class(cfg.method.name).check_views(resolve_views(cfg))
