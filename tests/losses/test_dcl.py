"""Tests of DCL and DCLW (Yeh et al. eq. 6): a naive per-pair reference, the relation to NT-Xent,
invariants, and a 2-process run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslvision.losses.dcl import DCLLoss, dcl
from sslvision.losses.ntxent import nt_xent


def random_views(seed: int, batch: int, dim: int, dtype: torch.dtype = torch.float64):
    """Two views (z_a, z_b) of a batch, reproducible from ``seed`` in any process."""
    generator = torch.Generator().manual_seed(seed)
    z_a = torch.randn(batch, dim, generator=generator, dtype=dtype)
    z_b = torch.randn(batch, dim, generator=generator, dtype=dtype)
    return z_a, z_b


def cosine_similarity(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.dot(u, v) / (torch.sqrt(torch.dot(u, u)) * torch.sqrt(torch.dot(v, v)))


def naive_weights(z_a: torch.Tensor, z_b: torch.Tensor, sigma: float) -> list[torch.Tensor]:
    """DCLW's 2 - exp(s_i / sigma) / mean_j exp(s_j / sigma), held constant (detached)."""
    scores = [
        torch.exp(cosine_similarity(a, b).detach() / sigma) for a, b in zip(z_a, z_b, strict=True)
    ]
    mean = sum(scores) / len(scores)
    return [2 - score / mean for score in scores]


def naive_dcl_terms(z_a, z_b, temperature):
    """Per anchor: (positive logit, log of the sum of exp over the negatives), views 0..2N-1."""
    views = [*z_a, *z_b]
    num_views = len(views)
    terms = []
    for i in range(num_views):
        positive = (i + num_views // 2) % num_views
        negative_sum = sum(
            torch.exp(cosine_similarity(views[i], views[k]) / temperature)
            for k in range(num_views)
            if k not in (i, positive)
        )
        terms.append((cosine_similarity(views[i], views[positive]) / temperature, negative_sum))
    return terms


def naive_dcl(z_a, z_b, temperature, weight_sigma=None):
    """Eq. 6 one anchor at a time: -w_i sim(z_i, z_j) / T + log sum_{k not in {i, j}} exp(...)."""
    batch = len(z_a)
    weights = [1.0] * batch if weight_sigma is None else naive_weights(z_a, z_b, weight_sigma)
    terms = naive_dcl_terms(z_a, z_b, temperature)
    total = torch.zeros((), dtype=z_a.dtype)
    for i, (positive, negative_sum) in enumerate(terms):
        total = total - weights[i % batch] * positive + torch.log(negative_sum)
    return total / len(terms)


def views_with_equal_positive_cosines(seed: int, batch: int, dim: int, cosine: float):
    """Random z_a, and z_b at the same angle (cosine ``cosine``) from every row of z_a."""
    z_a, noise = random_views(seed, batch, dim)
    u = F.normalize(z_a, dim=1)
    v = F.normalize(noise - (noise * u).sum(dim=1, keepdim=True) * u, dim=1)  # v _|_ u
    z_b = 3 * (cosine * u + math.sqrt(1 - cosine**2) * v)
    return z_a, z_b


@pytest.mark.parametrize(
    ("batch", "dim", "temperature", "weight_sigma"),
    [
        (2, 4, 0.1, None),
        (3, 3, 1.0, None),
        (8, 16, 0.07, None),
        (16, 32, 0.5, None),
        (2, 4, 0.1, 0.5),
        (5, 8, 0.1, 0.5),
        (8, 16, 0.2, 0.1),
        (6, 2, 1.0, 2.0),
    ],
)
def test_matches_naive_per_pair_loss_and_gradient(batch, dim, temperature, weight_sigma):
    z_a, z_b = random_views(seed=batch * 100 + dim, batch=batch, dim=dim)
    z_a.requires_grad_()
    z_b.requires_grad_()
    loss = dcl(z_a, z_b, temperature, weight_sigma)
    grad_a, grad_b = torch.autograd.grad(loss, (z_a, z_b))
    expected = naive_dcl(z_a, z_b, temperature, weight_sigma)
    expected_grad_a, expected_grad_b = torch.autograd.grad(expected, (z_a, z_b))

    # dcl computes in float32, the reference in float64.
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_a, expected_grad_a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_b, expected_grad_b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_two_pairs_of_orthogonal_vectors_match_closed_form(temperature):
    # Views a0 = 2 e1, a1 = e2, b0 = 5 e1, b1 = 3 e3; every anchor has two orthogonal negatives,
    # so log(1 + 1) = log 2 each. Positive similarities: 1 for a0, b0 and 0 for a1, b1.
    # Mean over the 4 anchors: log 2 - (1/T + 1/T + 0 + 0) / 4 = log 2 - 1 / (2T).
    e1, e2, e3 = torch.eye(3)
    z_a = torch.stack([2 * e1, e2])
    z_b = torch.stack([5 * e1, 3 * e3])
    expected = math.log(2) - 1 / (2 * temperature)
    assert float(dcl(z_a, z_b, temperature)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("batch", "temperature"), [(2, 0.1), (6, 0.5), (16, 0.07)])
def test_nt_xent_is_dcl_plus_the_coupling_term(batch, temperature):
    # NT-Xent_i = -pos_i + log(e^pos_i + S_i) = DCL_i + log(1 + e^pos_i / S_i), S_i the negatives.
    z_a, z_b = random_views(seed=batch, batch=batch, dim=8)
    coupling = torch.stack(
        [torch.log(1 + torch.exp(pos) / s) for pos, s in naive_dcl_terms(z_a, z_b, temperature)]
    ).mean()
    dcl_loss = dcl(z_a, z_b, temperature)
    nt_xent_loss = nt_xent(z_a, z_b, temperature)
    assert dcl_loss < nt_xent_loss
    torch.testing.assert_close((nt_xent_loss - dcl_loss).double(), coupling, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("cosine", "weight_sigma"), [(0.3, 0.5), (-0.5, 0.1), (0.9, 2.0)])
def test_dclw_with_equal_positive_cosines_has_unit_weights_and_reduces_to_dcl(cosine, weight_sigma):
    # Every weight is 2 - exp(s / sigma) / exp(s / sigma) = 1, so values and gradients agree.
    z_a, z_b = views_with_equal_positive_cosines(seed=1, batch=6, dim=8, cosine=cosine)
    z_a.requires_grad_()
    z_b.requires_grad_()
    weighted = dcl(z_a, z_b, 0.1, weight_sigma)
    weighted_grads = torch.autograd.grad(weighted, (z_a, z_b))
    plain = dcl(z_a, z_b, 0.1)
    plain_grads = torch.autograd.grad(plain, (z_a, z_b))
    torch.testing.assert_close(weighted, plain)
    torch.testing.assert_close(weighted_grads, plain_grads, rtol=1e-5, atol=1e-6)


def test_dclw_weight_is_held_constant_for_the_gradient():
    # The gradient is that of -w_i s_i / T with w_i a number, not that of w_i(z) s_i(z) / T.
    z_a, z_b = random_views(seed=3, batch=5, dim=8)
    z_a.requires_grad_()
    (grad,) = torch.autograd.grad(dcl(z_a, z_b, 0.1, weight_sigma=0.5), z_a)
    (constant_weight_grad,) = torch.autograd.grad(naive_dcl(z_a, z_b, 0.1, 0.5), z_a)

    cosines = F.cosine_similarity(z_a, z_b)
    live_weights = 2 - torch.exp(cosines / 0.5) / torch.exp(cosines / 0.5).mean()
    terms = naive_dcl_terms(z_a, z_b, 0.1)
    live_weight_loss = sum(
        -live_weights[i % 5] * positive + torch.log(negative_sum)
        for i, (positive, negative_sum) in enumerate(terms)
    ) / len(terms)
    (live_weight_grad,) = torch.autograd.grad(live_weight_loss, z_a)

    torch.testing.assert_close(grad, constant_weight_grad, rtol=1e-4, atol=1e-5)
    assert (grad - live_weight_grad).abs().max() > 0.1


def test_dclw_weights_the_further_apart_positive_pairs_more():
    # Two pairs, cosines 1 and 0 with sigma = 1: mean exp = (e + 1) / 2, so the close pair gets
    # 2 - 2e / (e + 1) < 1 and the far pair 2 - 2 / (e + 1) > 1. Negatives are all orthogonal
    # (log 2 each), hence the loss is log 2 - w_close / (2T).
    e1, e2, e3 = torch.eye(3)
    z_a = torch.stack([e1, e2])
    z_b = torch.stack([e1, e3])
    temperature = 0.5
    w_close = 2 - 2 * math.e / (math.e + 1)
    expected = math.log(2) - w_close / (2 * temperature)
    assert float(dcl(z_a, z_b, temperature, weight_sigma=1.0)) == pytest.approx(expected, rel=1e-6)


def test_dclw_stays_finite_for_a_tiny_sigma():
    z_a, z_b = random_views(seed=2, batch=8, dim=16, dtype=torch.float32)
    assert torch.isfinite(dcl(z_a, z_b, 0.1, weight_sigma=1e-3))


@pytest.mark.parametrize("weight_sigma", [None, 0.5])
def test_permuting_the_batch_leaves_the_loss_unchanged(weight_sigma):
    z_a, z_b = random_views(seed=11, batch=12, dim=8)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        dcl(z_a[order], z_b[order], 0.2, weight_sigma), dcl(z_a, z_b, 0.2, weight_sigma)
    )


@pytest.mark.parametrize("weight_sigma", [None, 0.5])
def test_swapping_the_views_leaves_the_loss_unchanged(weight_sigma):
    z_a, z_b = random_views(seed=12, batch=9, dim=8)
    torch.testing.assert_close(dcl(z_b, z_a, 0.2, weight_sigma), dcl(z_a, z_b, 0.2, weight_sigma))


def test_scaling_the_inputs_leaves_the_loss_unchanged():
    z_a, z_b = random_views(seed=13, batch=10, dim=8)
    generator = torch.Generator().manual_seed(1)
    scale_a = 10 ** (4 * torch.rand(10, 1, generator=generator, dtype=torch.float64) - 2)
    scale_b = 10 ** (4 * torch.rand(10, 1, generator=generator, dtype=torch.float64) - 2)
    torch.testing.assert_close(
        dcl(z_a * scale_a, z_b * scale_b, 0.2, 0.5), dcl(z_a, z_b, 0.2, 0.5), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    ("case", "weight_sigma"),
    [("random", None), ("identical views", None), ("tiny norms", 0.5), ("identical views", 0.5)],
)
def test_gradients_are_finite(case, weight_sigma):
    z_a, z_b = random_views(seed=16, batch=8, dim=16, dtype=torch.float32)
    if case == "identical views":
        z_b = z_a.clone()
    elif case == "tiny norms":
        z_a, z_b = 1e-6 * z_a, 1e-6 * z_b
    z_a.requires_grad_()
    z_b.requires_grad_()
    dcl(z_a, z_b, 0.05, weight_sigma).backward()
    assert torch.isfinite(z_a.grad).all()
    assert torch.isfinite(z_b.grad).all()


def test_module_form_matches_function():
    z_a, z_b = random_views(seed=17, batch=4, dim=8)
    torch.testing.assert_close(DCLLoss(temperature=0.3)(z_a, z_b), dcl(z_a, z_b, 0.3))
    torch.testing.assert_close(
        DCLLoss(temperature=0.3, weight_sigma=0.5)(z_a, z_b), dcl(z_a, z_b, 0.3, 0.5)
    )


def test_views_of_different_shapes_are_rejected_with_both_shapes_named():
    with pytest.raises(ValueError, match=r"equal shape, got torch.Size\(\[4, 8\]\) and .*\[3, 8\]"):
        dcl(torch.randn(4, 8), torch.randn(3, 8))


def test_a_single_sample_is_rejected_for_want_of_negatives():
    with pytest.raises(ValueError, match="at least 2 samples over all processes, got 1"):
        dcl(torch.randn(1, 8), torch.randn(1, 8))


@pytest.mark.parametrize("temperature", [0.0, -0.1])
def test_non_positive_temperature_is_rejected(temperature):
    with pytest.raises(ValueError, match=f"temperature must be positive, got {temperature}"):
        DCLLoss(temperature=temperature)


@pytest.mark.parametrize("weight_sigma", [0.0, -0.5])
def test_non_positive_weight_sigma_is_rejected(weight_sigma):
    with pytest.raises(
        ValueError, match=f"weight_sigma must be positive or None, got {weight_sigma}"
    ):
        DCLLoss(weight_sigma=weight_sigma)


# batch/rank, dim, T, sigma, seed; batch 1 per rank works only when the negatives are gathered.
DISTRIBUTED_CASES = [
    (3, 8, 0.1, None, 1),
    (1, 4, 0.5, None, 2),
    (4, 16, 0.2, 0.5, 3),
    (1, 4, 1.0, 0.5, 4),
]


def dcl_on_rank_slice(rank: int, world_size: int, out_dir) -> None:
    """Worker: DCL(W) and its input gradients on this rank's rows of the global batch."""
    results = []
    for batch, dim, temperature, weight_sigma, seed in DISTRIBUTED_CASES:
        z_a, z_b = random_views(seed, world_size * batch, dim, dtype=torch.float32)
        rows = slice(rank * batch, (rank + 1) * batch)
        local_a = z_a[rows].clone().requires_grad_()
        local_b = z_b[rows].clone().requires_grad_()
        loss = dcl(local_a, local_b, temperature, weight_sigma)
        loss.backward()
        results.append({"loss": loss.detach(), "grad_a": local_a.grad, "grad_b": local_b.grad})
    torch.save(results, out_dir / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_whole_batch(distributed_run, tmp_path):
    world_size = 2
    distributed_run(dcl_on_rank_slice, tmp_path, world_size=world_size)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]

    for case_index, (batch, dim, temperature, weight_sigma, seed) in enumerate(DISTRIBUTED_CASES):
        z_a, z_b = random_views(seed, world_size * batch, dim, dtype=torch.float32)
        z_a.requires_grad_()
        z_b.requires_grad_()
        whole_batch_loss = dcl(z_a, z_b, temperature, weight_sigma)
        whole_batch_loss.backward()

        rank_results = [results[case_index] for results in per_rank]
        mean_loss = torch.stack([result["loss"] for result in rank_results]).mean()
        torch.testing.assert_close(mean_loss, whole_batch_loss.detach())
        for rank, result in enumerate(rank_results):
            rows = slice(rank * batch, (rank + 1) * batch)
            # Each rank's gradient already sums every rank's loss (all_gather's backward); DDP
            # then averages over ranks, which gives the gradient of the mean loss.
            torch.testing.assert_close(result["grad_a"] / world_size, z_a.grad[rows])
            torch.testing.assert_close(result["grad_b"] / world_size, z_b.grad[rows])
            if batch > 1:
                local_only = dcl(z_a[rows], z_b[rows], temperature, weight_sigma)
                assert not torch.isclose(result["loss"], local_only), "negatives not gathered"
