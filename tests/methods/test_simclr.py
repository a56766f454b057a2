"""SimCLR's loss options: each one is the named loss of the two views' projections."""

from __future__ import annotations

import pytest
import torch

from sslvision.augment.views import Views, ViewStack
from sslvision.config import config_from_dict
from sslvision.errors import ConfigError
from sslvision.losses.dcl import dcl
from sslvision.losses.ntxent import nt_xent
from sslvision.losses.supcon import supcon
from sslvision.methods.registry import build_method


def build(**method: object):
    cfg = config_from_dict(
        {"method": {"name": "simclr", "proj_hidden_dim": 32, "proj_output_dim": 8, **method}}
    )
    torch.manual_seed(0)
    return build_method(cfg).eval()


def views_with_labels(labels: torch.Tensor | None) -> Views:
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(6, 3, 16, 16, generator=g) for _ in range(2)]
    boxes = [torch.zeros(6, 4)] * 2
    flips = [torch.zeros(6, dtype=torch.bool)] * 2
    return Views(
        ViewStack.of(images),
        ViewStack.of(boxes),
        ViewStack.of(flips),
        global_count=2,
        labels=labels,
    )


LABELS = torch.tensor([0, 1, 0, 2, 1, 0])
LOSSES = {
    "ntxent": lambda a, b: nt_xent(a, b, 0.3),
    "dcl": lambda a, b: dcl(a, b, 0.3),
    "dclw": lambda a, b: dcl(a, b, 0.3, weight_sigma=0.5),
    "supcon": lambda a, b: supcon(a, b, LABELS, 0.3),
}


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_loss_option_is_that_loss_of_the_projections(loss: str) -> None:
    model = build(loss=loss, temperature=0.3)
    views = views_with_labels(LABELS)
    with torch.no_grad():
        value = model.training_step(views)["loss"]
        z_a, z_b = (model.projector(model.backbone(x)) for x in views.images)
        torch.testing.assert_close(value, LOSSES[loss](z_a, z_b), rtol=1e-4, atol=1e-5)


def test_supcon_without_labels_says_so() -> None:
    with pytest.raises(ValueError, match="supcon needs labels"):
        build(loss="supcon").training_step(views_with_labels(None))


def test_unknown_loss_names_the_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown method\.loss 'infonce'\. Valid choices: ntxent"
    ):
        build(loss="infonce")
