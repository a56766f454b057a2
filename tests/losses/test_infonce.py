"""Tests of MoCo's InfoNCE (queue form, eq. 1) and MoCo v3's batch form (Algorithm 1)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslvision.losses.infonce import BatchInfoNCELoss, InfoNCELoss, batch_info_nce, info_nce


def random_inputs(seed: int, batch: int, dim: int, queue: int, dtype=torch.float64):
    """Queries, keys (not normalised) and a queue of unit negatives, reproducible from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, dim, generator=generator, dtype=dtype)
    key = torch.randn(batch, dim, generator=generator, dtype=dtype)
    negatives = F.normalize(torch.randn(queue, dim, generator=generator, dtype=dtype), dim=1)
    return query, key, negatives


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.sqrt(torch.dot(v, v))


def naive_info_nce(query, key, negatives, temperature):
    """Eq. 1 one query at a time: -log of the positive's share of exp(logit) among all logits."""
    total = torch.zeros((), dtype=query.dtype)
    for q, k in zip(query, key, strict=True):
        q, k = unit(q), unit(k.detach())
        positive = torch.exp(torch.dot(q, k) / temperature)
        negative = sum(torch.exp(torch.dot(q, n) / temperature) for n in negatives)
        total = total - torch.log(positive / (positive + negative))
    return total / len(query)


def naive_batch_info_nce_per_row(query, key, temperature):
    """Algorithm 1 one query at a time against the whole batch; key ``i`` is query ``i``'s pair."""
    keys = [unit(k.detach()) for k in key]
    losses = []
    for i, q in enumerate(query):
        q = unit(q)
        scores = [torch.exp(torch.dot(q, k) / temperature) for k in keys]
        losses.append(-torch.log(scores[i] / sum(scores)))
    return torch.stack(losses)


@pytest.mark.parametrize(
    ("batch", "dim", "queue", "temperature"),
    [(1, 4, 1, 0.1), (3, 5, 7, 0.07), (8, 16, 32, 0.2), (5, 3, 64, 1.0), (4, 8, 0, 0.5)],
)
def test_info_nce_matches_naive_loss_and_query_gradient(batch, dim, queue, temperature):
    query, key, negatives = random_inputs(batch * 1000 + queue, batch, dim, queue)
    query.requires_grad_()
    loss = info_nce(query, key, negatives, temperature)
    (grad,) = torch.autograd.grad(loss, query)
    expected = naive_info_nce(query, key, negatives, temperature)
    (expected_grad,) = torch.autograd.grad(expected, query)

    # info_nce computes in float32, the reference in float64.
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)


def test_info_nce_with_an_empty_queue_is_zero():
    # Only the positive logit is left: its softmax share is 1.
    query, key, negatives = random_inputs(1, batch=4, dim=8, queue=0)
    assert float(info_nce(query, key, negatives, 0.2)) == pytest.approx(0.0, abs=1e-6)


def test_info_nce_matches_closed_form_with_orthogonal_negatives():
    # q = k = e1 and K negatives orthogonal to it: -log(e^{1/T} / (e^{1/T} + K)).
    temperature, eye = 0.5, torch.eye(4)
    loss = info_nce(3 * eye[:1], 2 * eye[:1], eye[1:], temperature)
    expected = math.log(1 + 3 * math.exp(-1 / temperature))
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_permuting_the_queue_leaves_info_nce_unchanged():
    query, key, negatives = random_inputs(2, batch=6, dim=8, queue=20)
    order = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        info_nce(query, key, negatives[order], 0.2), info_nce(query, key, negatives, 0.2)
    )


def test_permuting_the_batch_leaves_info_nce_unchanged():
    query, key, negatives = random_inputs(3, batch=10, dim=8, queue=16)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        info_nce(query[order], key[order], negatives, 0.2), info_nce(query, key, negatives, 0.2)
    )


def test_scaling_query_and_key_leaves_info_nce_unchanged():
    query, key, negatives = random_inputs(4, batch=6, dim=8, queue=16)
    torch.testing.assert_close(
        info_nce(1e3 * query, 1e-3 * key, negatives, 0.2),
        info_nce(query, key, negatives, 0.2),
        rtol=1e-5,
        atol=1e-6,
    )


def test_info_nce_sends_no_gradient_to_keys_or_queue():
    query, key, negatives = random_inputs(5, batch=4, dim=8, queue=16)
    for tensor in (query, key, negatives):
        tensor.requires_grad_()
    loss = info_nce(query, key, negatives, 0.2)
    grad_query, grad_key, grad_negatives = torch.autograd.grad(
        loss, (query, key, negatives), allow_unused=True
    )
    assert grad_query is not None and grad_query.abs().sum() > 0
    assert grad_key is None
    assert grad_negatives is None


@pytest.mark.parametrize(
    ("batch", "dim", "temperature"), [(1, 4, 0.2), (2, 3, 1.0), (8, 16, 0.2), (6, 2, 0.07)]
)
def test_batch_info_nce_matches_naive_loss_and_query_gradient(batch, dim, temperature):
    query, key, _ = random_inputs(batch * 10 + dim, batch, dim, queue=0)
    query.requires_grad_()
    loss = batch_info_nce(query, key, temperature)
    (grad,) = torch.autograd.grad(loss, query)
    expected = naive_batch_info_nce_per_row(query, key, temperature).mean()
    (expected_grad,) = torch.autograd.grad(expected, query)

    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)


def test_batch_info_nce_sends_no_gradient_to_keys():
    query, key, _ = random_inputs(6, batch=4, dim=8, queue=0)
    query.requires_grad_()
    key.requires_grad_()
    grad_query, grad_key = torch.autograd.grad(
        batch_info_nce(query, key, 0.2), (query, key), allow_unused=True
    )
    assert grad_query is not None and grad_query.abs().sum() > 0
    assert grad_key is None


def test_permuting_the_batch_leaves_batch_info_nce_unchanged():
    query, key, _ = random_inputs(7, batch=10, dim=8, queue=0)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        batch_info_nce(query[order], key[order], 0.2), batch_info_nce(query, key, 0.2)
    )


def test_batch_info_nce_equals_info_nce_with_the_other_keys_as_queue():
    # For one query the other keys of the batch play the queue's part.
    query, key, _ = random_inputs(8, batch=5, dim=8, queue=0)
    unit_keys = F.normalize(key, dim=1)
    per_query = [
        info_nce(
            query[i : i + 1], key[i : i + 1], torch.cat([unit_keys[:i], unit_keys[i + 1 :]]), 0.3
        )
        for i in range(5)
    ]
    torch.testing.assert_close(batch_info_nce(query, key, 0.3), torch.stack(per_query).mean())


def test_module_forms_match_functions():
    query, key, negatives = random_inputs(9, batch=4, dim=8, queue=8)
    torch.testing.assert_close(
        InfoNCELoss(temperature=0.3)(query, key, negatives), info_nce(query, key, negatives, 0.3)
    )
    torch.testing.assert_close(
        BatchInfoNCELoss(temperature=0.3)(query, key), batch_info_nce(query, key, 0.3)
    )


def test_inputs_of_mismatched_shapes_are_rejected_with_the_shapes_named():
    with pytest.raises(ValueError, match=r"equal shape, got torch.Size\(\[4, 8\]\) and .*\[3, 8\]"):
        info_nce(torch.randn(4, 8), torch.randn(3, 8), torch.randn(5, 8), 0.2)
    with pytest.raises(ValueError, match=r"equal shape, got torch.Size\(\[4, 8\]\) and .*\[3, 8\]"):
        batch_info_nce(torch.randn(4, 8), torch.randn(3, 8), 0.2)
    with pytest.raises(
        ValueError, match=r"negatives of shape \(K, 8\), got torch.Size\(\[5, 7\]\)"
    ):
        info_nce(torch.randn(4, 8), torch.randn(4, 8), torch.randn(5, 7), 0.2)


@pytest.mark.parametrize("module", [InfoNCELoss, BatchInfoNCELoss])
@pytest.mark.parametrize("temperature", [0.0, -0.1])
def test_non_positive_temperature_is_rejected(module, temperature):
    with pytest.raises(ValueError, match=f"temperature must be positive, got {temperature}"):
        module(temperature=temperature)


DISTRIBUTED_CASES = [(3, 8, 0.2, 1), (1, 4, 1.0, 2), (5, 16, 0.1, 3)]  # batch/rank, dim, T, seed


def batch_info_nce_on_rank_slice(rank: int, world_size: int, out_dir) -> None:
    """Worker: MoCo v3 InfoNCE and its query gradient on this rank's rows of the global batch."""
    results = []
    for batch, dim, temperature, seed in DISTRIBUTED_CASES:
        query, key, _ = random_inputs(seed, world_size * batch, dim, 0, dtype=torch.float32)
        rows = slice(rank * batch, (rank + 1) * batch)
        local_query = query[rows].clone().requires_grad_()
        loss = batch_info_nce(local_query, key[rows].clone(), temperature)
        loss.backward()
        results.append({"loss": loss.detach(), "grad_query": local_query.grad})
    torch.save(results, out_dir / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_whole_batch(distributed_run, tmp_path):
    world_size = 2
    distributed_run(batch_info_nce_on_rank_slice, tmp_path, world_size=world_size)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]

    for case_index, (batch, dim, temperature, seed) in enumerate(DISTRIBUTED_CASES):
        query, key, _ = random_inputs(seed, world_size * batch, dim, 0, dtype=torch.float32)
        query.requires_grad_()
        whole_batch_loss = batch_info_nce(query, key, temperature)
        whole_batch_loss.backward()
        per_row = naive_batch_info_nce_per_row(query.detach().double(), key.double(), temperature)

        rank_results = [results[case_index] for results in per_rank]
        mean_loss = torch.stack([result["loss"] for result in rank_results]).mean()
        torch.testing.assert_close(mean_loss, whole_batch_loss.detach())
        for rank, result in enumerate(rank_results):
            rows = slice(rank * batch, (rank + 1) * batch)
            # Each rank's loss is the mean over its own queries against all keys of the batch.
            torch.testing.assert_close(
                result["loss"].double(), per_row[rows].mean(), rtol=1e-5, atol=1e-6
            )
            # Keys take no gradient, so a rank's query gradient is that of its own mean alone;
            # averaging over ranks (DDP) gives the gradient of the whole-batch mean.
            torch.testing.assert_close(result["grad_query"] / world_size, query.grad[rows])
            if batch > 1:
                local_only = batch_info_nce(query[rows], key[rows], temperature)
                assert not torch.isclose(result["loss"], local_only), "keys not gathered"
