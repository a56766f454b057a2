"""PixPro's pixel-to-propagation consistency loss (eq. 5, one direction) against a naive loop."""

from __future__ import annotations

import math

import pytest
import torch

from sslvision.losses.pixpro import pixpro_loss


def naive_pixpro(y: torch.Tensor, x: torch.Tensor, positive: torch.Tensor) -> float:
    """Per image: the mean of -cos(y_i, x'_j) over its positive pairs (0 without any); then the
    mean over images."""
    total = 0.0
    for b in range(y.shape[0]):
        ys, xs = y[b].flatten(1), x[b].flatten(1)
        cosines = [
            float(ys[:, i] @ xs[:, j])
            / math.sqrt(float(ys[:, i] @ ys[:, i]) * float(xs[:, j] @ xs[:, j]))
            for i in range(ys.shape[1])
            for j in range(xs.shape[1])
            if positive[b, i, j]
        ]
        total += -sum(cosines) / len(cosines) if cosines else 0.0
    return total / y.shape[0]


def test_loss_equals_the_naive_loop_for_maps_of_different_sizes() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randn(3, 5, 2, 3, generator=g)
    x = torch.randn(3, 5, 3, 3, generator=g)
    positive = torch.rand(3, 6, 9, generator=g) < 0.3
    positive[2] = False  # an image whose views share no cell counts as 0
    assert positive[:2].any()
    loss = pixpro_loss(y, x, positive)
    assert float(loss) == pytest.approx(naive_pixpro(y, x, positive), rel=1e-5, abs=1e-6)


def test_no_gradient_reaches_the_target() -> None:
    y = torch.randn(2, 4, 2, 2, requires_grad=True)
    x = torch.randn(2, 4, 2, 2, requires_grad=True)
    pixpro_loss(y, x, torch.ones(2, 4, 4, dtype=torch.bool)).backward()
    assert x.grad is None
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_shapes_are_checked() -> None:
    y = torch.randn(2, 4, 2, 2)
    with pytest.raises(ValueError, match="positive mask"):
        pixpro_loss(y, y, torch.ones(2, 4, 3, dtype=torch.bool))
