"""Importing the config layer stays light: no methods, no torch, so a recipe is read quickly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "torchvision", "timm", "kornia", "accelerate")
ROOT = Path(__file__).resolve().parents[1]


def _modules_after(statement: str) -> list[str]:
    """The modules in ``sys.modules`` after ``statement`` runs in a fresh interpreter."""
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return json.loads(run.stdout.splitlines()[-1])


def test_importing_config_imports_no_method_and_no_torch() -> None:
    loaded = _modules_after("import sslvision.config")
    assert "sslvision.config" in loaded
    methods = [m for m in loaded if m == "sslvision.methods" or m.startswith("sslvision.methods.")]
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY]
    assert not methods, f"import sslvision.config imports {methods}"
    assert not heavy, f"import sslvision.config imports {sorted({m.split('.')[0] for m in heavy})}"


def test_reading_a_recipe_finds_the_methods_through_the_registry() -> None:
    """The method section's schema comes from the method's own module, imported by name."""
    loaded = _modules_after(
        "from sslvision.config import config_from_dict; "
        "config_from_dict({'method': {'name': 'byol'}})"
    )
    assert "sslvision.methods.byol" in loaded
