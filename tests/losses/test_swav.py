"""Tests of SwAV's Sinkhorn-Knopp codes and swapped prediction loss: naive loop references,
marginals, invariances, dtypes, and a real 2-process run against one process on the whole batch.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslvision.losses.swav import SwAVLoss, sinkhorn_knopp, swapped_prediction_loss


def random_scores(seed: int, batch: int, num_prototypes: int, scale: float = 0.05, crops: int = 1):
    """``crops`` score matrices (B, K) of mild magnitude, reproducible from ``seed`` anywhere."""
    generator = torch.Generator().manual_seed(seed)
    return [
        scale * torch.randn(batch, num_prototypes, generator=generator, dtype=torch.float64)
        for _ in range(crops)
    ]


def cosine_scores(seed: int, batch: int, num_prototypes: int, dim: int = 16) -> torch.Tensor:
    """Scores as SwAV sees them: cosines of unit features and unit prototypes, in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(batch, dim, generator=generator), dim=1)
    prototypes = F.normalize(torch.randn(num_prototypes, dim, generator=generator), dim=1)
    return features @ prototypes.T


def naive_sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """The authors' algorithm on Python floats, one entry at a time, Q[k][b] being K x B."""
    batch, num_prototypes = scores.shape
    values = scores.tolist()
    q = [[math.exp(values[b][k] / epsilon) for b in range(batch)] for k in range(num_prototypes)]
    total = sum(q[k][b] for k in range(num_prototypes) for b in range(batch))
    q = [[q[k][b] / total for b in range(batch)] for k in range(num_prototypes)]
    for _ in range(iterations):
        for k in range(num_prototypes):
            row_sum = sum(q[k][b] for b in range(batch))
            for b in range(batch):
                q[k][b] = q[k][b] / row_sum / num_prototypes
        for b in range(batch):
            column_sum = sum(q[k][b] for k in range(num_prototypes))
            for k in range(num_prototypes):
                q[k][b] = q[k][b] / column_sum / batch
    codes = [[q[k][b] * batch for k in range(num_prototypes)] for b in range(batch)]
    return torch.tensor(codes, dtype=torch.float64)


def naive_swapped_prediction(scores, codes, temperature: float) -> torch.Tensor:
    """The loss with every sum written out: crops i and v, samples b, prototypes k."""
    num_crops, batch, num_prototypes = len(scores), scores[0].shape[0], scores[0].shape[1]
    loss = torch.zeros((), dtype=torch.float64)
    for i in range(len(codes)):
        subloss = torch.zeros((), dtype=torch.float64)
        for v in range(num_crops):
            if v == i:
                continue
            for b in range(batch):
                logits = [scores[v][b, k] / temperature for k in range(num_prototypes)]
                log_normaliser = torch.log(sum(torch.exp(logit) for logit in logits))
                for k in range(num_prototypes):
                    subloss = subloss - codes[i][b, k] * (logits[k] - log_normaliser) / batch
        loss = loss + subloss / (num_crops - 1)
    return loss / len(codes)


# ---------------------------------------------------------------- Sinkhorn-Knopp


@pytest.mark.parametrize(("batch", "num_prototypes"), [(1, 3), (8, 4), (5, 16), (32, 7)])
def test_codes_are_non_negative_and_each_sample_sums_to_one(batch, num_prototypes):
    codes = sinkhorn_knopp(cosine_scores(seed=batch, batch=batch, num_prototypes=num_prototypes))
    assert codes.shape == (batch, num_prototypes)
    assert (codes >= 0).all()
    # The last step of each iteration normalises the samples: exact up to rounding.
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(batch), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("batch", "num_prototypes"), [(16, 4), (8, 32), (64, 10)])
def test_prototypes_share_the_batch_almost_equally_after_three_iterations(batch, num_prototypes):
    (scores,) = random_scores(seed=1, batch=batch, num_prototypes=num_prototypes, scale=0.05)
    codes = sinkhorn_knopp(scores, epsilon=0.05, iterations=3)
    share = torch.full((num_prototypes,), batch / num_prototypes)
    torch.testing.assert_close(codes.sum(dim=0), share, rtol=1e-2, atol=0)


@pytest.mark.parametrize(("batch", "num_prototypes"), [(16, 4), (8, 32), (64, 10)])
def test_marginals_converge_to_exactly_uniform_with_more_iterations(batch, num_prototypes):
    scores = cosine_scores(seed=2, batch=batch, num_prototypes=num_prototypes)
    share = torch.full((num_prototypes,), batch / num_prototypes)
    few = sinkhorn_knopp(scores, iterations=3)
    many = sinkhorn_knopp(scores, iterations=50)
    assert not torch.allclose(few.sum(dim=0), share, rtol=1e-2), "precondition: 3 are not enough"
    torch.testing.assert_close(many.sum(dim=0), share, rtol=1e-4, atol=0)
    torch.testing.assert_close(many.sum(dim=1), torch.ones(batch), rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("batch", "num_prototypes", "epsilon", "iterations"),
    [(1, 1, 0.05, 1), (4, 3, 0.05, 3), (3, 8, 0.05, 3), (10, 5, 0.1, 1), (6, 6, 0.03, 7)],
)
def test_matches_naive_loop_implementation(batch, num_prototypes, epsilon, iterations):
    scores = cosine_scores(
        seed=batch * 10 + num_prototypes, batch=batch, num_prototypes=num_prototypes
    )
    expected = naive_sinkhorn(scores.double(), epsilon, iterations)
    codes = sinkhorn_knopp(scores, epsilon, iterations)
    assert codes.dtype == torch.float32
    torch.testing.assert_close(codes.double(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shift", [-50.0, 3.0, 100.0])
def test_adding_a_constant_to_every_score_leaves_the_codes_unchanged(shift):
    # 100 / 0.05 = 2000: exp would overflow even in float64 without the max subtraction.
    scores = cosine_scores(seed=3, batch=12, num_prototypes=5).double()
    torch.testing.assert_close(
        sinkhorn_knopp(scores + shift), sinkhorn_knopp(scores), rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("epsilon", [0.05, 0.01, 0.005])
def test_extreme_cosine_scores_stay_finite_where_float32_would_underflow(epsilon):
    # Scores +-1 apart by 2: exp(-2 / eps) down to e^-400, far below float32's smallest number.
    scores = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
    codes = sinkhorn_knopp(scores, epsilon=epsilon)
    assert torch.isfinite(codes).all()
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(4))
    torch.testing.assert_close(codes.double(), naive_sinkhorn(scores.double(), epsilon, 3))


def test_bf16_input_gives_float32_codes_computed_in_float64():
    scores = cosine_scores(seed=5, batch=10, num_prototypes=6).bfloat16()
    codes = sinkhorn_knopp(scores)
    assert codes.dtype == torch.float32
    # Same values in float32: the iterations run in float64 either way, so the codes are equal.
    torch.testing.assert_close(codes, sinkhorn_knopp(scores.float()), rtol=0, atol=0)
    torch.testing.assert_close(codes.double(), naive_sinkhorn(scores.double(), 0.05, 3))


def test_autocast_does_not_lower_the_precision():
    scores = cosine_scores(seed=6, batch=10, num_prototypes=6)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        codes = sinkhorn_knopp(scores)
    assert codes.dtype == torch.float32
    torch.testing.assert_close(codes, sinkhorn_knopp(scores), rtol=0, atol=0)


def test_codes_carry_no_graph_and_leave_the_scores_untouched():
    scores = cosine_scores(seed=7, batch=6, num_prototypes=4).requires_grad_()
    before = scores.detach().clone()
    codes = sinkhorn_knopp(scores)
    assert not codes.requires_grad
    assert codes.is_contiguous()
    torch.testing.assert_close(scores.detach(), before, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epsilon": 0.0}, "epsilon must be positive, got 0.0"),
        ({"iterations": 0}, "at least one iteration, got 0"),
    ],
)
def test_invalid_sinkhorn_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sinkhorn_knopp(torch.zeros(2, 3), **kwargs)
    with pytest.raises(ValueError, match=message):
        SwAVLoss(**kwargs)


def test_scores_of_the_wrong_rank_are_rejected():
    with pytest.raises(ValueError, match=r"shape \(B, K\), got \(2, 3, 4\)"):
        sinkhorn_knopp(torch.zeros(2, 3, 4))


# ---------------------------------------------------------------- swapped prediction loss


@pytest.mark.parametrize(
    ("crops", "code_crops", "batch", "num_prototypes", "temperature"),
    [(2, 2, 3, 4, 0.1), (2, 1, 1, 5, 0.5), (4, 2, 3, 5, 0.1), (5, 3, 2, 3, 1.0), (3, 3, 2, 2, 0.2)],
)
def test_loss_and_gradient_match_naive_loops(crops, code_crops, batch, num_prototypes, temperature):
    seed = crops * 7 + batch
    scores = [s.requires_grad_() for s in random_scores(seed, batch, num_prototypes, 0.5, crops)]
    codes = [sinkhorn_knopp(s.detach()).double() for s in scores[:code_crops]]
    loss = swapped_prediction_loss(scores, codes, temperature)
    # A lone code crop is never predicted (it has no other code crop): zero gradient there.
    grads = torch.autograd.grad(loss, scores, allow_unused=True, materialize_grads=True)
    expected = naive_swapped_prediction(scores, codes, temperature)
    expected_grads = torch.autograd.grad(
        expected, scores, allow_unused=True, materialize_grads=True
    )
    torch.testing.assert_close(loss, expected)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("num_prototypes", [2, 10, 3000])
def test_uniform_codes_predicted_uniformly_cost_log_k(num_prototypes):
    # Each row of scores is constant (any constant): softmax is uniform, log p_k = -ln K.
    scores = [torch.full((4, num_prototypes), value) for value in (0.3, -0.7, 0.0, 1.0)]
    codes = [torch.full((4, num_prototypes), 1 / num_prototypes)] * 2
    loss = swapped_prediction_loss(scores, codes, temperature=0.1)
    assert float(loss) == pytest.approx(math.log(num_prototypes), rel=1e-6)


def test_confident_correct_predictions_cost_almost_nothing():
    assignment = torch.tensor([0, 2, 1, 2])
    one_hot = F.one_hot(assignment, num_classes=3).float()
    loss = swapped_prediction_loss([one_hot, one_hot, one_hot], [one_hot, one_hot], 0.01)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_no_gradient_reaches_the_codes():
    scores = [s.float().requires_grad_() for s in random_scores(8, 4, 5, scale=0.5, crops=3)]
    codes = [torch.softmax(s.detach(), dim=1).requires_grad_() for s in scores[:2]]
    swapped_prediction_loss(scores, codes).backward()
    assert all(code.grad is None for code in codes)
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in scores)


def test_low_precision_scores_give_a_float32_loss():
    scores = [s.bfloat16() for s in random_scores(9, 4, 5, scale=0.5, crops=3)]
    codes = [sinkhorn_knopp(s) for s in scores[:2]]
    loss = swapped_prediction_loss(scores, codes)
    assert loss.dtype == torch.float32
    expected = swapped_prediction_loss([s.float() for s in scores], codes)
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)


@pytest.mark.parametrize("num_code_crops", [1, 2, 3])
def test_module_computes_codes_of_the_first_crops(num_code_crops):
    scores = [s.requires_grad_() for s in random_scores(10, 6, 4, scale=0.5, crops=4)]
    loss = SwAVLoss(temperature=0.2, epsilon=0.1, iterations=4)(scores, num_code_crops)
    codes = [sinkhorn_knopp(s.detach(), 0.1, 4) for s in scores[:num_code_crops]]
    torch.testing.assert_close(loss, swapped_prediction_loss(scores, codes, 0.2))
    loss.backward()
    # Every crop is predicted except a lone code crop, which only provides targets.
    assert (scores[0].grad is None) == (num_code_crops == 1)
    assert all(s.grad is not None for s in scores[1:])


@pytest.mark.parametrize(
    ("scores", "codes", "message"),
    [
        ([torch.zeros(2, 3)], [torch.zeros(2, 3)], "at least 2 crops, got 1"),
        ([torch.zeros(2, 3)] * 2, [], "codes for 1 to 2 crops, got 0"),
        ([torch.zeros(2, 3)] * 2, [torch.zeros(2, 3)] * 3, "codes for 1 to 2 crops, got 3"),
        ([torch.zeros(2, 3), torch.zeros(2, 4)], [torch.zeros(2, 3)], r"scores\[1\] has shape"),
        ([torch.zeros(2, 3)] * 2, [torch.zeros(3, 3)], r"codes\[0\] has shape \(3, 3\)"),
    ],
)
def test_inconsistent_crops_and_codes_are_rejected(scores, codes, message):
    with pytest.raises(ValueError, match=message):
        swapped_prediction_loss(scores, codes)


@pytest.mark.parametrize("num_code_crops", [0, 3])
def test_module_rejects_a_number_of_code_crops_out_of_range(num_code_crops):
    with pytest.raises(ValueError, match=f"between 1 and the 2 crops, got {num_code_crops}"):
        SwAVLoss()([torch.zeros(2, 3)] * 2, num_code_crops)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_non_positive_temperature_is_rejected(temperature):
    with pytest.raises(ValueError, match=f"temperature must be positive, got {temperature}"):
        SwAVLoss(temperature=temperature)
    with pytest.raises(ValueError, match=f"temperature must be positive, got {temperature}"):
        swapped_prediction_loss([torch.zeros(2, 3)] * 2, [torch.zeros(2, 3)], temperature)


# ---------------------------------------------------------------- two real processes

# (rows on rank 0, rows on rank 1, prototypes, seed); the local batch sizes may differ.
SINKHORN_CASES = [(3, 3, 8, 1), (5, 5, 4, 2), (2, 6, 5, 3), (1, 1, 3, 4)]
LOSS_CASES = [(3, 8, 4, 0.1, 11), (4, 5, 2, 0.2, 12)]  # batch/rank, K, crops, T, seed


def swav_on_rank_slice(rank: int, world_size: int, out_dir) -> None:
    """Worker: codes, loss and score gradients on this rank's rows of the global batch."""
    sinkhorn_results = []
    for rows_0, rows_1, num_prototypes, seed in SINKHORN_CASES:
        scores = cosine_scores(seed, rows_0 + rows_1, num_prototypes)
        rows = slice(0, rows_0) if rank == 0 else slice(rows_0, rows_0 + rows_1)
        sinkhorn_results.append(sinkhorn_knopp(scores[rows]))
    loss_results = []
    for batch, num_prototypes, crops, temperature, seed in LOSS_CASES:
        all_scores = random_scores(seed, world_size * batch, num_prototypes, 0.5, crops)
        rows = slice(rank * batch, (rank + 1) * batch)
        local = [s[rows].float().clone().requires_grad_() for s in all_scores]
        loss = SwAVLoss(temperature=temperature)(local, num_code_crops=2)
        loss.backward()
        loss_results.append({"loss": loss.detach(), "grads": [s.grad for s in local]})
    torch.save({"codes": sinkhorn_results, "losses": loss_results}, out_dir / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_whole_batch(distributed_run, tmp_path):
    world_size = 2
    distributed_run(swav_on_rank_slice, tmp_path, world_size=world_size)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]

    for index, (rows_0, rows_1, num_prototypes, seed) in enumerate(SINKHORN_CASES):
        scores = cosine_scores(seed, rows_0 + rows_1, num_prototypes)
        whole = sinkhorn_knopp(scores)
        gathered = torch.cat([per_rank[r]["codes"][index] for r in range(world_size)])
        torch.testing.assert_close(gathered, whole, rtol=1e-6, atol=1e-7)
        local_only = sinkhorn_knopp(scores[:rows_0])
        assert not torch.allclose(per_rank[0]["codes"][index], local_only), "sums not reduced"

    for index, (batch, num_prototypes, crops, temperature, seed) in enumerate(LOSS_CASES):
        all_scores = random_scores(seed, world_size * batch, num_prototypes, 0.5, crops)
        whole_scores = [s.float().requires_grad_() for s in all_scores]
        whole_loss = SwAVLoss(temperature=temperature)(whole_scores, num_code_crops=2)
        whole_loss.backward()
        results = [per_rank[r]["losses"][index] for r in range(world_size)]
        mean_loss = torch.stack([result["loss"] for result in results]).mean()
        torch.testing.assert_close(mean_loss, whole_loss.detach())
        for rank, result in enumerate(results):
            rows = slice(rank * batch, (rank + 1) * batch)
            # Codes are targets, so each rank's gradient is that of its own loss; DDP averages
            # them, which is the gradient of the mean loss.
            for grad, whole_scores_v in zip(result["grads"], whole_scores, strict=True):
                torch.testing.assert_close(grad / world_size, whole_scores_v.grad[rows])
