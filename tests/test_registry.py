"""The generic registry: members register where they are defined and are found by import."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sslvision.errors import ConfigError
from sslvision.registry import Registry


@pytest.fixture
def plugin_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """A package ``shapes_plugin`` whose modules register into the registry its __init__ holds."""
    package = tmp_path / "shapes_plugin"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from sslvision.registry import Registry\n"
        "SHAPES = Registry('shape.name', home='shapes_plugin')\n"
    )
    for module, name in (("circle", "circle"), ("square", "square")):
        (package / f"{module}.py").write_text(
            "from shapes_plugin import SHAPES\n"
            f"@SHAPES.register({name!r})\n"
            f"def {name}() -> str:\n"
            f"    return {name!r}\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("shapes_plugin").SHAPES
    for module in [m for m in sys.modules if m.split(".")[0] == "shapes_plugin"]:
        del sys.modules[module]


def test_members_are_found_by_importing_the_home_modules(plugin_package: Registry) -> None:
    assert "shapes_plugin.square" not in sys.modules  # nothing imported before a look-up
    assert plugin_package.get("square")() == "square"
    assert plugin_package.names() == ["circle", "square"]


def test_an_unknown_name_is_a_config_error_naming_the_choices(plugin_package: Registry) -> None:
    message = "unknown shape.name 'hexagon'. Valid choices: circle, square."
    with pytest.raises(ConfigError) as error:
        plugin_package.get("hexagon")
    assert str(error.value) == message


def test_a_name_is_taken_once_but_a_reimported_member_may_register_again() -> None:
    registry = Registry("shape.name", home="sslvision.errors")

    def circle() -> str:
        return "circle"

    registry.register("circle")(circle)
    registry.register("circle")(circle)  # a module imported twice registers the same origin
    with pytest.raises(ValueError, match="'circle' is registered twice"):
        registry.register("circle")(lambda: "another circle")
