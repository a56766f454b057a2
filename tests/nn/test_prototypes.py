"""Tests of SwAV's prototypes: unit rows, cosine scores, and the first-epoch freeze."""

from __future__ import annotations

import pytest
import torch
from timm.optim import Lars

from sslvision.nn.prototypes import Prototypes


def row_norms(prototypes: Prototypes) -> torch.Tensor:
    return prototypes.layer.weight.detach().norm(dim=1)


@pytest.mark.parametrize(("dim", "num_prototypes"), [(1, 1), (8, 5), (128, 3000)])
def test_rows_are_unit_after_construction(dim, num_prototypes):
    prototypes = Prototypes(dim, num_prototypes)
    assert prototypes.layer.weight.shape == (num_prototypes, dim)
    assert prototypes.layer.bias is None
    torch.testing.assert_close(row_norms(prototypes), torch.ones(num_prototypes))


def test_default_is_the_papers_3000_prototypes():
    assert Prototypes(dim=16).num_prototypes == 3000


def test_normalize_restores_unit_rows_in_the_same_directions_and_parameter():
    torch.manual_seed(0)
    prototypes = Prototypes(dim=6, num_prototypes=4)
    weight = prototypes.layer.weight
    with torch.no_grad():
        weight.mul_(torch.tensor([[0.1], [3.0], [1.0], [25.0]])).add_(0.3 * torch.randn(4, 6))
    perturbed = weight.detach().clone()
    prototypes.normalize_()
    assert prototypes.layer.weight is weight, "an optimiser holding the parameter must keep it"
    assert weight.requires_grad
    torch.testing.assert_close(row_norms(prototypes), torch.ones(4))
    for row in range(4):
        expected = perturbed[row] / torch.sqrt(torch.dot(perturbed[row], perturbed[row]))
        torch.testing.assert_close(weight.detach()[row], expected)


def test_scores_are_cosine_similarities_computed_naively():
    torch.manual_seed(1)
    prototypes = Prototypes(dim=5, num_prototypes=3)
    x = 4 * torch.randn(7, 5)
    scores = prototypes(x)
    weight = prototypes.layer.weight.detach()
    assert scores.shape == (7, 3)
    for b in range(7):
        for k in range(3):
            u, c = x[b], weight[k]
            cosine = torch.dot(u, c) / (torch.sqrt(torch.dot(u, u)) * torch.sqrt(torch.dot(c, c)))
            torch.testing.assert_close(scores[b, k], cosine)


def test_dropping_the_gradient_keeps_the_inputs_gradient():
    torch.manual_seed(2)
    prototypes = Prototypes(dim=8, num_prototypes=6)
    x = torch.randn(5, 8, requires_grad=True)
    (prototypes(x) * torch.randn(5, 6)).sum().backward()
    assert prototypes.layer.weight.grad is not None
    assert prototypes.layer.weight.grad.abs().sum() > 0
    prototypes.drop_gradient_()
    assert prototypes.layer.weight.grad is None
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1),
        lambda params: torch.optim.AdamW(params, lr=0.1, weight_decay=0.1),
        lambda params: Lars(params, lr=0.1, momentum=0.9, weight_decay=0.1),
    ],
    ids=["sgd", "adamw", "lars"],
)
def test_optimisers_leave_frozen_prototypes_alone_including_weight_decay(make_optimizer):
    torch.manual_seed(3)
    prototypes = Prototypes(dim=8, num_prototypes=6)
    head = torch.nn.Linear(8, 8)
    optimizer = make_optimizer([*prototypes.parameters(), *head.parameters()])
    before = prototypes.layer.weight.detach().clone()
    head_before = head.weight.detach().clone()
    prototypes(head(torch.randn(5, 8))).logsumexp(dim=1).mean().backward()
    prototypes.drop_gradient_()
    optimizer.step()
    # Checked before normalize_, which would hide weight decay (a mere rescaling of each row).
    torch.testing.assert_close(prototypes.layer.weight.detach(), before, rtol=0, atol=0)
    assert not torch.equal(head.weight.detach(), head_before), "the rest of the model trains"
    assert (
        prototypes.layer.weight not in optimizer.state
        or not optimizer.state[prototypes.layer.weight]
    ), "no optimiser state (momentum) built for a frozen parameter"


def test_state_dict_holds_the_weight_of_the_layer():
    assert list(Prototypes(dim=4, num_prototypes=2).state_dict()) == ["layer.weight"]


@pytest.mark.parametrize(("dim", "num_prototypes"), [(0, 3), (4, 0)])
def test_empty_shapes_are_rejected(dim, num_prototypes):
    with pytest.raises(ValueError, match=f"got {dim}, {num_prototypes}"):
        Prototypes(dim, num_prototypes)
