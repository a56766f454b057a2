"""sslvision: self-supervised vision pretraining with honest evaluation protocols.

The public API is imported on first use (PEP 562), so that ``import sslvision.config`` (which
imports this package first) stays free of torch:

>>> import sslvision
>>> "train" in dir(sslvision) and "load_config" in sslvision.__all__
True
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Each public name and the module that defines it, the one place that says where the API lives.
_API = {
    "load_config": "sslvision.config",
    "train": "sslvision.engine.trainer",
    "build_method": "sslvision.methods.registry",
    "load_encoder": "sslvision.eval.encoders",
    "run_knn": "sslvision.eval.knn_eval",
    "knn_classify": "sslvision.eval.knn",
    "run_linear": "sslvision.eval.linear_eval",
    "get_protocol": "sslvision.eval.linear_protocols",
    "run_logreg": "sslvision.eval.cached_evals",
    "run_fewshot": "sslvision.eval.cached_evals",
    "FeatureStore": "sslvision.eval.feature_cache",
    "run_detection": "sslvision.eval.detection",
}
__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    """Import the public name ``name`` from its module the first time it is asked for."""
    if name not in _API:
        raise AttributeError(f"module 'sslvision' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
