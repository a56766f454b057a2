"""A method defined outside the package trains once it is registered: no list to edit."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch.nn.functional as F
from torch import Tensor, nn

from sslvision.augment.views import Views
from sslvision.backbones import Backbone
from sslvision.config import MethodConfig, config_from_dict
from sslvision.engine.trainer import train
from sslvision.methods.base import Method
from sslvision.methods.registry import available_methods, register_method


@pytest.fixture
def toy_method(scratch_registries: None) -> Iterator[type[Method]]:
    """Register a two-view cosine-alignment method for one test, then forget it."""

    @dataclass
    class ToyConfig(MethodConfig):
        name: str = "toy"
        output_dim: int = 8

    @register_method
    class Toy(Method):
        """Pulls the two views' projections together (it would collapse; two steps are fine)."""

        name = "toy"
        config_class = ToyConfig

        def __init__(self, cfg: ToyConfig, backbone: Backbone) -> None:
            super().__init__(cfg, backbone)
            self.head = nn.Linear(backbone.feature_dim, cfg.output_dim)

        def training_step(self, views: Views) -> dict[str, Tensor]:
            a, b = (F.normalize(self.head(self.backbone(x)), dim=1) for x in views.images[:2])
            return {"loss": (a - b).pow(2).sum(dim=1).mean()}

    yield Toy


def test_a_registered_toy_method_trains_with_the_engine(toy_method, tmp_path: Path) -> None:
    cfg = config_from_dict(
        {
            "output_dir": str(tmp_path),
            "data": {"image_size": 16, "num_images": 32, "num_workers": 0},
            "augment": {"size": 16},
            "method": {"name": "toy", "output_dim": 4},
            "train": {
                "max_steps": 2,
                "batch_size": 8,
                "precision": "no",
                "log_every": 1,
                "progress_bar": False,
            },
        }
    )
    assert "toy" in available_methods() and cfg.method.output_dim == 4
    result = train(cfg)
    assert result.step == 2
    assert result.checkpoint.is_file()
    assert [row["step"] for row in result.metrics] == [1, 2]
    assert all(row["loss"] >= 0 for row in result.metrics)


def test_the_toy_method_is_gone_after_its_test() -> None:
    assert "toy" not in available_methods()
