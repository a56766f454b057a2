"""Tests of SupCon (Khosla et al. eq. 2, L_out): a naive per-pair reference, the link to NT-Xent,
invariants, and a 2-process run."""

from __future__ import annotations

import math

import pytest
import torch

from sslvision.losses.ntxent import nt_xent
from sslvision.losses.supcon import SupConLoss, supcon


def random_views(seed: int, batch: int, dim: int, classes: int, dtype=torch.float64):
    """Two views (z_a, z_b) and labels in [0, classes), reproducible from ``seed`` anywhere."""
    generator = torch.Generator().manual_seed(seed)
    z_a = torch.randn(batch, dim, generator=generator, dtype=dtype)
    z_b = torch.randn(batch, dim, generator=generator, dtype=dtype)
    labels = torch.randint(classes, (batch,), generator=generator)
    return z_a, z_b, labels


def cosine_similarity(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.dot(u, v) / (torch.sqrt(torch.dot(u, u)) * torch.sqrt(torch.dot(v, v)))


def naive_supcon(z_a, z_b, labels, temperature):
    """Eq. 2 one anchor and one positive at a time; views 0..N-1 are z_a, N..2N-1 are z_b."""
    views = [*z_a, *z_b]
    view_labels = [*labels.tolist(), *labels.tolist()]
    num_views = len(views)
    total = torch.zeros((), dtype=z_a.dtype)
    for i in range(num_views):
        others = [a for a in range(num_views) if a != i]
        positives = [p for p in others if view_labels[p] == view_labels[i]]
        denominator = sum(
            torch.exp(cosine_similarity(views[i], views[a]) / temperature) for a in others
        )
        anchor_loss = sum(
            -torch.log(torch.exp(cosine_similarity(views[i], views[p]) / temperature) / denominator)
            for p in positives
        )
        total = total + anchor_loss / len(positives)
    return total / num_views


@pytest.mark.parametrize(
    ("batch", "dim", "classes", "temperature"),
    [
        (1, 4, 1, 0.1),
        (2, 3, 1, 1.0),
        (5, 8, 2, 0.1),
        (8, 16, 3, 0.07),
        (16, 32, 5, 0.5),
        (6, 2, 6, 2.0),
    ],
)
def test_matches_naive_per_pair_loss_and_gradient(batch, dim, classes, temperature):
    z_a, z_b, labels = random_views(batch * 100 + dim, batch, dim, classes)
    z_a.requires_grad_()
    z_b.requires_grad_()
    loss = supcon(z_a, z_b, labels, temperature)
    grad_a, grad_b = torch.autograd.grad(loss, (z_a, z_b))
    expected = naive_supcon(z_a, z_b, labels, temperature)
    expected_grad_a, expected_grad_b = torch.autograd.grad(expected, (z_a, z_b))

    # supcon computes in float32, the reference in float64.
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_a, expected_grad_a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_b, expected_grad_b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("batch", "temperature"), [(1, 0.1), (4, 0.5), (16, 0.07)])
def test_distinct_labels_give_nt_xent(batch, temperature):
    # Each anchor's only positive is its other view: eq. 2 becomes SimCLR's eq. 1.
    z_a, z_b, _ = random_views(batch, batch, 8, classes=1, dtype=torch.float32)
    labels = torch.randperm(batch, generator=torch.Generator().manual_seed(0)) * 7
    torch.testing.assert_close(
        supcon(z_a, z_b, labels, temperature), nt_xent(z_a, z_b, temperature), rtol=1e-6, atol=1e-6
    )


def test_renaming_the_labels_leaves_the_loss_unchanged():
    z_a, z_b, labels = random_views(1, batch=12, dim=8, classes=4)
    renamed = torch.tensor([30, -2, 7, 11])[labels]  # a one-to-one map of the four classes
    torch.testing.assert_close(supcon(z_a, z_b, renamed, 0.2), supcon(z_a, z_b, labels, 0.2))


def test_permuting_the_batch_leaves_the_loss_unchanged():
    z_a, z_b, labels = random_views(2, batch=12, dim=8, classes=3)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        supcon(z_a[order], z_b[order], labels[order], 0.2), supcon(z_a, z_b, labels, 0.2)
    )


def test_swapping_the_views_leaves_the_loss_unchanged():
    z_a, z_b, labels = random_views(3, batch=9, dim=8, classes=3)
    torch.testing.assert_close(supcon(z_b, z_a, labels, 0.2), supcon(z_a, z_b, labels, 0.2))


def test_scaling_the_inputs_leaves_the_loss_unchanged():
    z_a, z_b, labels = random_views(4, batch=10, dim=8, classes=3)
    generator = torch.Generator().manual_seed(1)
    scale_a = 10 ** (4 * torch.rand(10, 1, generator=generator, dtype=torch.float64) - 2)
    scale_b = 10 ** (4 * torch.rand(10, 1, generator=generator, dtype=torch.float64) - 2)
    torch.testing.assert_close(
        supcon(z_a * scale_a, z_b * scale_b, labels, 0.2),
        supcon(z_a, z_b, labels, 0.2),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_labelling_identical_samples_as_one_class_lowers_the_loss(temperature):
    # Samples 2k and 2k + 1 are twins: equal features in each view. As extra positives the twin's
    # views have a similarity (1 and s) at least that of the anchor's own other view (s < 1), and
    # the denominator does not depend on the labels, so every anchor's loss goes down.
    base, noise, _ = random_views(5, batch=4, dim=16, classes=1)
    z_a = base.repeat_interleave(2, dim=0)
    z_b = (base + noise).repeat_interleave(2, dim=0)
    twins = torch.arange(4).repeat_interleave(2)
    assert supcon(z_a, z_b, twins, temperature) < supcon(z_a, z_b, torch.arange(8), temperature)


@pytest.mark.parametrize(("group", "temperature"), [(1, 0.5), (2, 0.5), (3, 0.1), (4, 1.0)])
def test_orthogonal_classes_of_identical_samples_match_closed_form(group, temperature):
    # Two classes of ``group`` samples, all views of a class equal, the classes orthogonal. Each
    # anchor has 2g - 1 positives at similarity 1 and 2g negatives at 0:
    #     -log(e^{1/T} / ((2g - 1) e^{1/T} + 2g)) = log(2g - 1 + 2g e^{-1/T}).
    # As T -> 0 this tends to log(2g - 1) = log |P(i)|: in L_out more identical positives raise the
    # floor of the loss rather than lower it.
    e1, e2 = torch.eye(2, dtype=torch.float64)
    z = torch.stack([e1] * group + [e2] * group)
    labels = torch.tensor([0] * group + [1] * group)
    expected = math.log(2 * group - 1 + 2 * group * math.exp(-1 / temperature))
    assert float(supcon(z, 3 * z, labels, temperature)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("case", "temperature"),
    [("random", 0.1), ("identical views", 0.05), ("one class", 0.1), ("tiny norms", 0.01)],
)
def test_gradients_are_finite(case, temperature):
    z_a, z_b, labels = random_views(6, batch=8, dim=16, classes=3, dtype=torch.float32)
    if case == "identical views":
        z_b = z_a.clone()
    elif case == "one class":
        labels = torch.zeros_like(labels)
    elif case == "tiny norms":
        z_a, z_b = 1e-6 * z_a, 1e-6 * z_b
    z_a.requires_grad_()
    z_b.requires_grad_()
    supcon(z_a, z_b, labels, temperature).backward()
    assert torch.isfinite(z_a.grad).all()
    assert torch.isfinite(z_b.grad).all()


def test_module_form_matches_function():
    z_a, z_b, labels = random_views(7, batch=4, dim=8, classes=2)
    torch.testing.assert_close(
        SupConLoss(temperature=0.3)(z_a, z_b, labels), supcon(z_a, z_b, labels, 0.3)
    )


def test_views_of_different_shapes_are_rejected_with_both_shapes_named():
    with pytest.raises(ValueError, match=r"equal shape, got torch.Size\(\[4, 8\]\) and .*\[3, 8\]"):
        supcon(torch.randn(4, 8), torch.randn(3, 8), torch.zeros(4, dtype=torch.long))


def test_labels_of_the_wrong_shape_are_rejected():
    with pytest.raises(
        ValueError, match=r"one label per sample, shape \(4,\), got torch.Size\(\[3\]\)"
    ):
        supcon(torch.randn(4, 8), torch.randn(4, 8), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("temperature", [0.0, -0.1])
def test_non_positive_temperature_is_rejected(temperature):
    with pytest.raises(ValueError, match=f"temperature must be positive, got {temperature}"):
        SupConLoss(temperature=temperature)


DISTRIBUTED_CASES = [
    (3, 8, 0.1, 2, 1),
    (1, 4, 0.5, 1, 2),
    (5, 16, 1.0, 3, 3),
]  # batch, dim, T, classes, seed


def supcon_on_rank_slice(rank: int, world_size: int, out_dir) -> None:
    """Worker: SupCon and its input gradients on this rank's rows of the global batch."""
    results = []
    for batch, dim, temperature, classes, seed in DISTRIBUTED_CASES:
        z_a, z_b, labels = random_views(seed, world_size * batch, dim, classes, torch.float32)
        rows = slice(rank * batch, (rank + 1) * batch)
        local_a = z_a[rows].clone().requires_grad_()
        local_b = z_b[rows].clone().requires_grad_()
        loss = supcon(local_a, local_b, labels[rows].clone(), temperature)
        loss.backward()
        results.append({"loss": loss.detach(), "grad_a": local_a.grad, "grad_b": local_b.grad})
    torch.save(results, out_dir / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_whole_batch(distributed_run, tmp_path):
    world_size = 2
    distributed_run(supcon_on_rank_slice, tmp_path, world_size=world_size)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]

    for case_index, (batch, dim, temperature, classes, seed) in enumerate(DISTRIBUTED_CASES):
        z_a, z_b, labels = random_views(seed, world_size * batch, dim, classes, torch.float32)
        z_a.requires_grad_()
        z_b.requires_grad_()
        whole_batch_loss = supcon(z_a, z_b, labels, temperature)
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
            local_only = supcon(z_a[rows], z_b[rows], labels[rows], temperature)
            assert not torch.isclose(result["loss"], local_only), "views not gathered"
