"""``from sslvision import ...``: the public names resolve to the functions that do the work."""

from __future__ import annotations

import pytest

import sslvision
from sslvision.config import load_config
from sslvision.engine.trainer import train
from sslvision.eval.cached_evals import run_fewshot, run_logreg
from sslvision.eval.detection import run_detection
from sslvision.eval.encoders import load_encoder
from sslvision.eval.feature_cache import FeatureStore
from sslvision.eval.knn import knn_classify
from sslvision.eval.knn_eval import run_knn
from sslvision.eval.linear_eval import run_linear
from sslvision.eval.linear_protocols import get_protocol
from sslvision.methods.registry import build_method

PUBLIC = {
    "load_config": load_config,
    "train": train,
    "build_method": build_method,
    "load_encoder": load_encoder,
    "run_knn": run_knn,
    "knn_classify": knn_classify,
    "run_linear": run_linear,
    "get_protocol": get_protocol,
    "run_logreg": run_logreg,
    "run_fewshot": run_fewshot,
    "FeatureStore": FeatureStore,
    "run_detection": run_detection,
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_name_is_the_library_function(name: str) -> None:
    assert getattr(sslvision, name) is PUBLIC[name]
    assert name in sslvision.__all__ and name in dir(sslvision)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        sslvision.trian  # noqa: B018
