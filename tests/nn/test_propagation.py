"""PixPro's pixel propagation module (eqs. 3-4) against a loop over cells, and its settings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslvision.nn.propagation import PixelPropagation


def naive_propagation(x: torch.Tensor, transform, gamma: float) -> torch.Tensor:
    """y_i = sum_j max(cos(x_i, x_j), 0) ** gamma * g(x_j) / |g(x_j)|, one cell at a time."""
    n, c, h, w = x.shape
    values = transform(x)
    out = torch.zeros_like(x)
    for b in range(n):
        for i in range(h * w):
            xi = x[b, :, i // w, i % w]
            total = torch.zeros(c, dtype=x.dtype)
            for j in range(h * w):
                xj = x[b, :, j // w, j % w]
                cosine = float(xi @ xj) / math.sqrt(float(xi @ xi) * float(xj @ xj))
                g = values[b, :, j // w, j % w]
                total += max(cosine, 0.0) ** gamma * g / g.norm()
            out[b, :, i // w, i % w] = total
    return out


@pytest.mark.parametrize("layers", [0, 1, 2])
@pytest.mark.parametrize("gamma", [1.0, 2.0, 3.5])
def test_propagation_equals_the_loop_over_cells(layers: int, gamma: float) -> None:
    torch.manual_seed(layers)
    ppm = PixelPropagation(6, gamma=gamma, transform_layers=layers).eval().double()
    x = torch.randn(2, 6, 3, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ppm(x), naive_propagation(x, ppm.transform, gamma))


def test_cells_with_negative_cosine_do_not_propagate() -> None:
    # Two cells pointing in opposite directions: each only propagates itself.
    x = torch.tensor([1.0, -1.0]).reshape(1, 1, 1, 2).expand(1, 3, 1, 2).contiguous()
    ppm = PixelPropagation(3, transform_layers=0)
    torch.testing.assert_close(ppm(x), F.normalize(x, dim=1))


def test_gradients_reach_the_input_and_the_transform() -> None:
    ppm = PixelPropagation(4, transform_layers=1)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    ppm(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in ppm.transform.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"gamma": 0.0}, "gamma must be positive"), ({"transform_layers": 3}, "0, 1 or 2 layers")],
)
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PixelPropagation(4, **kwargs)
