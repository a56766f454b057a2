"""No module imports from a layer above its own, so each layer can be used and tested alone.

Lowest first: ``errors``, ``registry`` < ``config`` < ``nn``, ``losses``, ``augment``, ``data``,
``backbones`` < ``methods`` < ``engine`` < ``eval`` < ``cli``, ``launch``, the package. A module
may import its own layer and those below. Every import statement counts, also those inside
functions and ``if TYPE_CHECKING`` blocks; a registry's lookup by name (``importlib``) is the one
sanctioned way down-up, and is no statement. ``import sslvision`` for ``__version__`` is allowed
everywhere: the package's ``__init__`` imports its API lazily, so that import brings nothing.
Besides the layers, ``eval`` must not import ``engine.trainer``: an evaluator reuses the engine's
parts, never the pretraining run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sslvision"
LAYERS = [
    {"errors", "registry"},
    {"config"},
    {"nn", "losses", "augment", "data", "backbones"},
    {"methods"},
    {"engine"},
    {"eval"},
    {"cli", "launch", ""},  # "": the package's own __init__
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
FORBIDDEN = {("eval", "sslvision.engine.trainer")}  # (importer's part, imported module)
METADATA = {"__version__"}


def module_name(path: Path) -> str:
    """``sslvision/eval/knn.py`` -> ``sslvision.eval.knn``; a package's ``__init__`` its name."""
    parts = ["sslvision", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """The layer-defining part of a module of the package: ``sslvision.eval.knn`` -> ``eval``."""
    return module.split(".")[1] if "." in module else ""


def imported_modules(tree: ast.Module, importer: str, is_package: bool) -> list[tuple[str, int]]:
    """Every ``sslvision`` module that ``tree`` imports, with the line of the statement."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name != "sslvision"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importer's package
                anchor = importer.split(".")[: len(importer.split(".")) - node.level + is_package]
                base = ".".join([*anchor, *([base] if base else [])])
            if base == "sslvision":  # from sslvision import config | train | __version__
                found += [
                    (_package_member(a.name), node.lineno)
                    for a in node.names
                    if a.name not in METADATA
                ]
            else:
                found.append((base, node.lineno))
    return [(m, line) for m, line in found if m == "sslvision" or m.startswith("sslvision.")]


def _package_member(name: str) -> str:
    """``from sslvision import name``: a submodule, else a name of the package's own API."""
    is_module = (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name).is_dir()
    return f"sslvision.{name}" if is_module else "sslvision"


def violations(source: str, importer: str, is_package: bool = False, where: str = "") -> list[str]:
    """One line per import in ``source`` that goes up a layer or crosses a forbidden edge."""
    own = part_of(importer)
    lines = []
    for module, line in imported_modules(ast.parse(source), importer, is_package):
        target = part_of(module)
        upward = RANK[target] > RANK[own]
        forbidden = any(own == p and (module + ".").startswith(m + ".") for p, m in FORBIDDEN)
        if upward or forbidden:
            lines.append(f"{where or importer}:{line}: {importer} ({own}) imports {module}")
    return lines


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = str(path.relative_to(PACKAGE.parent))
        found += violations(
            path.read_text(), module_name(path), path.name == "__init__.py", where=where
        )
    for line in found:
        print(line)
    assert not found, "imports against the layering:\n" + "\n".join(found)


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {part_of(module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert parts <= set(RANK), f"no layer for {sorted(parts - set(RANK))}"


@pytest.mark.parametrize(
    ("importer", "statement"),
    [
        ("sslvision.losses.ntxent", "from sslvision.methods.base import Method"),
        ("sslvision.nn.heads", "import sslvision.methods.registry"),
        ("sslvision.config", "def f():\n    from sslvision.methods import registry"),
        ("sslvision.config", "if TYPE_CHECKING:\n    from sslvision.methods.base import Method"),
        ("sslvision.engine.knn_monitor", "from sslvision.eval.knn_eval import knn_on_splits"),
        ("sslvision.eval.detection", "from sslvision.engine.trainer import train"),
        ("sslvision.eval.knn_eval", "from sslvision import train"),
        ("sslvision.data.spec", "from ..methods import registry"),
    ],
)
def test_the_check_catches_an_upward_import(importer: str, statement: str) -> None:
    assert violations(statement, importer)


@pytest.mark.parametrize(
    ("importer", "statement"),
    [
        ("sslvision.eval.encoders", "from sslvision.engine.checkpoint import backbone_state"),
        ("sslvision.engine.trainer", "from sslvision.nn.queue import process_local_buffers"),
        ("sslvision.engine.checkpoint", "import sslvision"),
        ("sslvision.eval.knn_eval", "from sslvision import __version__"),
        ("sslvision.config", "from sslvision.registry import METHOD_CONFIGS"),
        ("sslvision.cli", "from sslvision.eval.knn_eval import run_knn"),
    ],
)
def test_the_check_allows_imports_down_or_across(importer: str, statement: str) -> None:
    assert not violations(statement, importer)
