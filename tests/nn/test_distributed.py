"""Tests of the one-or-many-process helpers, alone and in a real 2-process gloo group."""

from __future__ import annotations

import pytest
import torch

from sslvision.nn.distributed import (
    gather_no_grad,
    gather_with_grad,
    is_distributed,
    rank,
    world_size,
)

ROWS_PER_RANK = 3
FEATURES = 4


def rank_rows(source_rank: int) -> torch.Tensor:
    """Rows that identify their rank: values 100 * rank + 0, 1, 2, ..."""
    return torch.arange(ROWS_PER_RANK * FEATURES, dtype=torch.float32).reshape(
        ROWS_PER_RANK, FEATURES
    ) + 100 * float(source_rank)


def gathered_weights(num_ranks: int) -> torch.Tensor:
    """Distinct weights for every gathered element, so each gradient entry is identifiable."""
    return torch.arange(num_ranks * ROWS_PER_RANK * FEATURES, dtype=torch.float32).reshape(
        num_ranks * ROWS_PER_RANK, FEATURES
    )


def test_one_process_reports_rank_zero_of_one():
    assert not is_distributed()
    assert rank() == 0
    assert world_size() == 1


def test_one_process_gather_with_grad_is_the_input_itself():
    source = rank_rows(0).requires_grad_()
    gathered = gather_with_grad(source)
    assert gathered is source
    (gathered * gathered_weights(1)).sum().backward()
    torch.testing.assert_close(source.grad, gathered_weights(1))


def test_one_process_gather_no_grad_keeps_values_and_drops_autograd():
    source = rank_rows(0).requires_grad_()
    gathered = gather_no_grad(source)
    torch.testing.assert_close(gathered, source.detach())
    assert not gathered.requires_grad


def gather_on_rank(rank_index: int, num_ranks: int, out_dir) -> None:
    """Worker: gather rank-tagged rows both ways and backpropagate rank-weighted sums."""
    source = rank_rows(rank_index).requires_grad_()
    with_grad = gather_with_grad(source)
    # Rank r weights the gathered rows by (r + 1): rank s's source then receives the gradient
    # sum_r (r + 1) * weights[rows of s] from every rank's loss.
    (with_grad * gathered_weights(num_ranks) * (rank_index + 1)).sum().backward()
    no_grad = gather_no_grad(source)
    transposed = rank_rows(rank_index).T  # not contiguous
    labels = torch.arange(ROWS_PER_RANK) + 10 * rank_index
    torch.save(
        {
            "is_distributed": is_distributed(),
            "rank": rank(),
            "world_size": world_size(),
            "with_grad": with_grad.detach(),
            "source_grad": source.grad,
            "no_grad": no_grad,
            "no_grad_requires_grad": no_grad.requires_grad,
            "labels": gather_no_grad(labels),
            "transposed_with_grad": gather_with_grad(transposed),
            "transposed_no_grad": gather_no_grad(transposed),
        },
        out_dir / f"rank{rank_index}.pt",
    )


@pytest.mark.slow
def test_two_gloo_processes_gather_in_rank_order_with_gradient_to_each_source(
    distributed_run, tmp_path
):
    num_ranks = 2
    distributed_run(gather_on_rank, tmp_path, world_size=num_ranks)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(num_ranks)]

    in_rank_order = torch.cat([rank_rows(r) for r in range(num_ranks)])
    labels_in_rank_order = torch.cat(
        [torch.arange(ROWS_PER_RANK) + 10 * r for r in range(num_ranks)]
    )
    transposed_in_rank_order = torch.cat([rank_rows(r).T for r in range(num_ranks)])
    rank_weight_sum = sum(r + 1 for r in range(num_ranks))
    for rank_index, result in enumerate(results):
        assert result["is_distributed"]
        assert result["rank"] == rank_index
        assert result["world_size"] == num_ranks
        torch.testing.assert_close(result["with_grad"], in_rank_order)
        torch.testing.assert_close(result["no_grad"], in_rank_order)
        assert not result["no_grad_requires_grad"]
        torch.testing.assert_close(result["labels"], labels_in_rank_order)
        torch.testing.assert_close(result["transposed_with_grad"], transposed_in_rank_order)
        torch.testing.assert_close(result["transposed_no_grad"], transposed_in_rank_order)
        rows = slice(rank_index * ROWS_PER_RANK, (rank_index + 1) * ROWS_PER_RANK)
        expected_grad = rank_weight_sum * gathered_weights(num_ranks)[rows]
        torch.testing.assert_close(result["source_grad"], expected_grad)
