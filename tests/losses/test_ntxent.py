"""Tests of NT-Xent (SimCLR eq. 1): a naive per-pair reference, invariants, and a 2-process run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslvision.losses.ntxent import NTXentLoss, nt_xent


def random_views(seed: int, batch: int, dim: int, dtype: torch.dtype = torch.float64):
    """Two views (z_a, z_b) of a batch, reproducible from ``seed`` in any process."""
    generator = torch.Generator().manual_seed(seed)
    z_a = torch.randn(batch, dim, generator=generator, dtype=dtype)
    z_b = torch.randn(batch, dim, generator=generator, dtype=dtype)
    return z_a, z_b


def cosine_similarity(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.dot(u, v) / (torch.sqrt(torch.dot(u, u)) * torch.sqrt(torch.dot(v, v)))


def naive_nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR eq. 1 one anchor at a time: views 0..N-1 are z_a, N..2N-1 are z_b, i pairs i +- N."""
    views = [*z_a, *z_b]
    num_views = len(views)
    total = torch.zeros((), dtype=z_a.dtype)
    for i in range(num_views):
        positive = (i + num_views // 2) % num_views
        numerator = torch.exp(cosine_similarity(views[i], views[positive]) / temperature)
        denominator = sum(
            torch.exp(cosine_similarity(views[i], views[k]) / temperature)
            for k in range(num_views)
            if k != i
        )
        total = total - torch.log(numerator / denominator)
    return total / num_views


@pytest.mark.parametrize(
    ("batch", "dim", "temperature"),
    [(1, 4, 0.1), (2, 3, 1.0), (5, 8, 0.1), (8, 16, 0.07), (16, 32, 0.5), (6, 2, 2.0)],
)
def test_matches_naive_per_pair_loss_and_gradient(batch, dim, temperature):
    z_a, z_b = random_views(seed=batch * 100 + dim, batch=batch, dim=dim)
    z_a.requires_grad_()
    z_b.requires_grad_()
    loss = nt_xent(z_a, z_b, temperature)
    grad_a, grad_b = torch.autograd.grad(loss, (z_a, z_b))
    expected = naive_nt_xent(z_a, z_b, temperature)
    expected_grad_a, expected_grad_b = torch.autograd.grad(expected, (z_a, z_b))

    # nt_xent computes in float32, the reference in float64.
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_a, expected_grad_a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_b, expected_grad_b, rtol=1e-4, atol=1e-5)


def test_single_pair_has_no_negatives_and_zero_loss():
    # With N = 1 the only k != i is the positive, so every ratio in eq. 1 is 1.
    z_a, z_b = random_views(seed=3, batch=1, dim=5)
    assert float(nt_xent(z_a, z_b, 0.1)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_two_pairs_of_orthogonal_vectors_match_closed_form(temperature):
    # Views a0 = 2 e1, a1 = e2, b0 = 5 e1, b1 = 3 e3 (the scale must not matter).
    # Anchors a0 and b0: positive similarity 1, both negatives (e2, e3) orthogonal:
    #     -log(e^{1/T} / (e^{1/T} + 1 + 1)) = log(1 + 2 e^{-1/T})
    # Anchors a1 and b1: positive e2.e3 = 0 and both negatives (e1, e1) orthogonal too:
    #     -log(e^0 / (e^0 + e^0 + e^0)) = log 3
    # Mean over the 4 anchors: (log(1 + 2 e^{-1/T}) + log 3) / 2.
    e1, e2, e3 = torch.eye(3)
    z_a = torch.stack([2 * e1, e2])
    z_b = torch.stack([5 * e1, 3 * e3])
    expected = (math.log(1 + 2 * math.exp(-1 / temperature)) + math.log(3)) / 2
    assert float(nt_xent(z_a, z_b, temperature)) == pytest.approx(expected, rel=1e-6)


def test_permuting_the_batch_leaves_the_loss_unchanged():
    z_a, z_b = random_views(seed=11, batch=12, dim=8)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(nt_xent(z_a[order], z_b[order], 0.2), nt_xent(z_a, z_b, 0.2))


def test_swapping_the_views_leaves_the_loss_unchanged():
    z_a, z_b = random_views(seed=12, batch=9, dim=8)
    torch.testing.assert_close(nt_xent(z_b, z_a, 0.2), nt_xent(z_a, z_b, 0.2))


def test_scaling_the_inputs_leaves_the_loss_unchanged():
    z_a, z_b = random_views(seed=13, batch=10, dim=8)
    generator = torch.Generator().manual_seed(1)
    scale_a = 10 ** (4 * torch.rand(10, 1, generator=generator, dtype=torch.float64) - 2)
    scale_b = 10 ** (4 * torch.rand(10, 1, generator=generator, dtype=torch.float64) - 2)
    torch.testing.assert_close(
        nt_xent(z_a * scale_a, z_b * scale_b, 0.2), nt_xent(z_a, z_b, 0.2), rtol=1e-5, atol=1e-6
    )


def test_loss_goes_to_zero_as_temperature_goes_to_zero_when_positives_are_most_similar():
    batch = 6
    z_a, noise = random_views(seed=14, batch=batch, dim=32)
    z_b = z_a + 0.05 * noise
    views = F.normalize(torch.cat([z_a, z_b]), dim=1)
    similarity = views @ views.T
    anchors = torch.arange(2 * batch)
    positives = (anchors + batch) % (2 * batch)
    negative_similarity = similarity.clone()
    negative_similarity[anchors, anchors] = -math.inf
    negative_similarity[anchors, positives] = -math.inf
    margin = similarity[anchors, positives] - negative_similarity.max(dim=1).values
    assert margin.min() > 0.3, "precondition: every positive is clearly the most similar view"

    losses = [float(nt_xent(z_a, z_b, t)) for t in (1.0, 0.3, 0.1, 0.03, 0.01)]
    assert losses == sorted(losses, reverse=True)
    assert losses[-1] < 1e-5


@pytest.mark.parametrize("batch", [2, 5, 16])
def test_loss_goes_to_log_of_2n_minus_1_as_temperature_grows(batch):
    # All logits sim / T shrink to 0: each anchor's ratio becomes 1 / (2N - 1).
    z_a, z_b = random_views(seed=15, batch=batch, dim=8)
    assert float(nt_xent(z_a, z_b, 1e4)) == pytest.approx(math.log(2 * batch - 1), abs=1e-3)


@pytest.mark.parametrize(
    ("case", "temperature"),
    [("random", 0.1), ("identical views", 0.05), ("huge norms", 0.1), ("tiny norms", 0.01)],
)
def test_gradients_are_finite(case, temperature):
    z_a, z_b = random_views(seed=16, batch=8, dim=16, dtype=torch.float32)
    if case == "identical views":
        z_b = z_a.clone()
    elif case == "huge norms":
        z_a, z_b = 1e6 * z_a, 1e6 * z_b
    elif case == "tiny norms":
        z_a, z_b = 1e-6 * z_a, 1e-6 * z_b
    z_a.requires_grad_()
    z_b.requires_grad_()
    nt_xent(z_a, z_b, temperature).backward()
    assert torch.isfinite(z_a.grad).all()
    assert torch.isfinite(z_b.grad).all()


def test_module_form_matches_function():
    z_a, z_b = random_views(seed=17, batch=4, dim=8)
    torch.testing.assert_close(NTXentLoss(temperature=0.3)(z_a, z_b), nt_xent(z_a, z_b, 0.3))


def test_views_of_different_shapes_are_rejected_with_both_shapes_named():
    with pytest.raises(ValueError, match=r"equal shape, got torch.Size\(\[4, 8\]\) and .*\[3, 8\]"):
        nt_xent(torch.randn(4, 8), torch.randn(3, 8))


@pytest.mark.parametrize("temperature", [0.0, -0.1])
def test_non_positive_temperature_is_rejected(temperature):
    with pytest.raises(ValueError, match=f"temperature must be positive, got {temperature}"):
        NTXentLoss(temperature=temperature)


DISTRIBUTED_CASES = [(3, 8, 0.1, 1), (1, 4, 0.5, 2), (5, 16, 1.0, 3)]  # batch/rank, dim, T, seed


def nt_xent_on_rank_slice(rank: int, world_size: int, out_dir) -> None:
    """Worker: NT-Xent and its input gradients on this rank's rows of the global batch."""
    results = []
    for batch, dim, temperature, seed in DISTRIBUTED_CASES:
        z_a, z_b = random_views(seed, world_size * batch, dim, dtype=torch.float32)
        rows = slice(rank * batch, (rank + 1) * batch)
        local_a = z_a[rows].clone().requires_grad_()
        local_b = z_b[rows].clone().requires_grad_()
        loss = nt_xent(local_a, local_b, temperature)
        loss.backward()
        results.append({"loss": loss.detach(), "grad_a": local_a.grad, "grad_b": local_b.grad})
    torch.save(results, out_dir / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_whole_batch(distributed_run, tmp_path):
    world_size = 2
    distributed_run(nt_xent_on_rank_slice, tmp_path, world_size=world_size)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]

    for case_index, (batch, dim, temperature, seed) in enumerate(DISTRIBUTED_CASES):
        z_a, z_b = random_views(seed, world_size * batch, dim, dtype=torch.float32)
        z_a.requires_grad_()
        z_b.requires_grad_()
        whole_batch_loss = nt_xent(z_a, z_b, temperature)
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
                local_only = nt_xent(z_a[rows], z_b[rows], temperature)
                assert not torch.isclose(result["loss"], local_only), "negatives not gathered"
