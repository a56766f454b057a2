"""Tests of BYOL's normalised MSE (eq. 2) against 2 - 2 cosine, its fixed points and invariants."""

from __future__ import annotations

import pytest
import torch

from sslvision.losses.byol import NormalizedMSELoss, normalized_mse


def random_pair(seed: int, batch: int, dim: int, dtype: torch.dtype = torch.float64):
    generator = torch.Generator().manual_seed(seed)
    prediction = torch.randn(batch, dim, generator=generator, dtype=dtype)
    target = torch.randn(batch, dim, generator=generator, dtype=dtype)
    return prediction, target


def naive_two_minus_two_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 2 one row at a time through the cosine: 2 - 2 <p, z> / (|p| |z|), target constant."""
    total = torch.zeros((), dtype=prediction.dtype)
    for p, z in zip(prediction, target.detach(), strict=True):
        cosine = torch.dot(p, z) / (torch.sqrt(torch.dot(p, p)) * torch.sqrt(torch.dot(z, z)))
        total = total + 2 - 2 * cosine
    return total / len(prediction)


@pytest.mark.parametrize(("batch", "dim"), [(1, 2), (4, 8), (16, 32), (7, 3)])
def test_matches_two_minus_two_cosine_and_its_gradient(batch, dim):
    prediction, target = random_pair(batch * 100 + dim, batch, dim)
    prediction.requires_grad_()
    loss = normalized_mse(prediction, target)
    (grad,) = torch.autograd.grad(loss, prediction)
    expected = naive_two_minus_two_cosine(prediction, target)
    (expected_grad,) = torch.autograd.grad(expected, prediction)

    # normalized_mse computes in float32, the reference in float64.
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


def test_fixed_points_same_opposite_and_orthogonal_directions():
    e1, e2 = torch.eye(2)
    prediction = torch.stack([2 * e1, 3 * e1, 5 * e1])
    same = torch.stack([7 * e1, 0.5 * e1, e1])
    assert float(normalized_mse(prediction, same)) == pytest.approx(0.0, abs=1e-7)
    assert float(normalized_mse(prediction, -same)) == pytest.approx(4.0, rel=1e-7)
    orthogonal = torch.stack([e2, -4 * e2, 0.1 * e2])
    assert float(normalized_mse(prediction, orthogonal)) == pytest.approx(2.0, rel=1e-7)


def test_loss_is_the_mean_of_the_rows():
    # Rows: same direction (0), opposite (4), orthogonal (2) -> mean 2.
    e1, e2 = torch.eye(2)
    prediction = torch.stack([e1, e1, e1])
    target = torch.stack([e1, -e1, e2])
    assert float(normalized_mse(prediction, target)) == pytest.approx(2.0, rel=1e-7)


def test_scaling_rows_leaves_the_loss_unchanged():
    prediction, target = random_pair(3, batch=10, dim=8)
    generator = torch.Generator().manual_seed(1)
    scale_p = 10 ** (4 * torch.rand(10, 1, generator=generator, dtype=torch.float64) - 2)
    scale_z = 10 ** (4 * torch.rand(10, 1, generator=generator, dtype=torch.float64) - 2)
    torch.testing.assert_close(
        normalized_mse(prediction * scale_p, target * scale_z),
        normalized_mse(prediction, target),
        rtol=1e-5,
        atol=1e-6,
    )


def test_permuting_the_batch_leaves_the_loss_unchanged():
    prediction, target = random_pair(4, batch=12, dim=8)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        normalized_mse(prediction[order], target[order]), normalized_mse(prediction, target)
    )


def test_no_gradient_reaches_the_target():
    prediction, target = random_pair(5, batch=4, dim=8)
    prediction.requires_grad_()
    target.requires_grad_()
    grad_prediction, grad_target = torch.autograd.grad(
        normalized_mse(prediction, target), (prediction, target), allow_unused=True
    )
    assert grad_prediction is not None and grad_prediction.abs().sum() > 0
    assert grad_target is None


def test_gradient_is_orthogonal_to_the_prediction():
    # The loss depends on the direction of each row only, so moving along the row changes nothing.
    prediction, target = random_pair(6, batch=5, dim=8)
    prediction.requires_grad_()
    normalized_mse(prediction, target).backward()
    radial = (prediction.grad * prediction.detach()).sum(dim=1)
    torch.testing.assert_close(radial, torch.zeros(5, dtype=radial.dtype), atol=1e-6, rtol=0)


def test_module_form_matches_function():
    prediction, target = random_pair(7, batch=4, dim=8)
    torch.testing.assert_close(
        NormalizedMSELoss()(prediction, target), normalized_mse(prediction, target)
    )


def test_inputs_of_different_shapes_are_rejected_with_both_shapes_named():
    with pytest.raises(ValueError, match=r"equal shape, got torch.Size\(\[4, 8\]\) and .*\[4, 7\]"):
        normalized_mse(torch.randn(4, 8), torch.randn(4, 7))
