"""DenseCL's cell matching (eq. 3) and dense InfoNCE (eq. 2) against naive loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslvision.losses.densecl import dense_info_nce, match_cells


def test_matching_picks_the_planted_most_similar_cell() -> None:
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(2, 16, 3, 3, generator=g)
    # Query cell i is a scaled, slightly perturbed copy of key cell planted[n, i]; cosine ignores
    # the scale, so the copy is the most similar cell.
    planted = torch.stack([torch.randperm(9, generator=g)[:6] for _ in range(2)])  # (2, 6)
    cells = torch.gather(keys.flatten(2), 2, planted[:, None, :].expand(-1, 16, -1))
    queries = (3.0 * cells + 0.01 * torch.randn(cells.shape, generator=g)).reshape(2, 16, 2, 3)
    assert torch.equal(match_cells(queries, keys), planted)


def naive_dense_loss(
    q_dense: torch.Tensor,
    k_dense: torch.Tensor,
    q_features: torch.Tensor,
    k_features: torch.Tensor,
    queue: torch.Tensor,
    t: float,
) -> float:
    """Eq. 3 then eq. 2, a query cell at a time, averaged over all cells of all images."""
    total, rows = 0.0, 0
    n = q_dense.shape[0]
    for b in range(n):
        fq, fk = q_features[b].flatten(1), k_features[b].flatten(1)
        rq, tk = q_dense[b].flatten(1), k_dense[b].flatten(1)
        for i in range(fq.shape[1]):
            sims = [
                float(F.cosine_similarity(fq[:, i], fk[:, j], dim=0)) for j in range(fk.shape[1])
            ]
            j = max(range(len(sims)), key=sims.__getitem__)
            r, positive = F.normalize(rq[:, i], dim=0), F.normalize(tk[:, j], dim=0)
            logits = [float(r @ positive) / t] + [float(r @ neg) / t for neg in queue]
            total += -logits[0] + math.log(sum(math.exp(v) for v in logits))
            rows += 1
    return total / rows


def test_dense_loss_equals_the_naive_double_loop() -> None:
    g = torch.Generator().manual_seed(1)
    q_dense, k_dense = torch.randn(2, 4, 2, 2, generator=g), torch.randn(2, 4, 3, 2, generator=g)
    q_features, k_features = (
        torch.randn(2, 5, 2, 2, generator=g),
        torch.randn(2, 5, 3, 2, generator=g),
    )
    queue = F.normalize(torch.randn(7, 4, generator=g), dim=1)
    match = match_cells(q_features, k_features)
    loss = dense_info_nce(q_dense, k_dense, match, queue, 0.2)
    expected = naive_dense_loss(q_dense, k_dense, q_features, k_features, queue, 0.2)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_only_the_queries_receive_gradient() -> None:
    q = torch.randn(2, 4, 2, 2, requires_grad=True)
    k = torch.randn(2, 4, 2, 2, requires_grad=True)
    queue = F.normalize(torch.randn(5, 4), dim=1)
    dense_info_nce(q, k, torch.zeros(2, 4, dtype=torch.long), queue, 0.2).backward()
    assert k.grad is None
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_shapes_are_checked() -> None:
    q, queue = torch.randn(2, 4, 2, 2), F.normalize(torch.randn(5, 4), dim=1)
    with pytest.raises(ValueError, match="one match per query cell"):
        dense_info_nce(q, q, torch.zeros(2, 3, dtype=torch.long), queue, 0.2)
    with pytest.raises(ValueError, match="same batch and channels"):
        match_cells(q, torch.randn(2, 5, 2, 2))
