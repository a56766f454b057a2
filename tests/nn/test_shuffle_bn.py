"""Tests of MoCo's shuffling BN, alone and across a real 2-process gloo group."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslvision.nn.shuffle_bn import shuffled_forward

ROWS_PER_RANK = 16
FEATURES = 5


def rank_batch(source_rank: int) -> torch.Tensor:
    """A reproducible batch per rank; column 0 tags each row as 1000 * rank + row, unique."""
    generator = torch.Generator().manual_seed(10 + source_rank)
    batch = torch.randn(ROWS_PER_RANK, FEATURES, generator=generator)
    batch[:, 0] = 1000 * source_rank + torch.arange(ROWS_PER_RANK, dtype=torch.float32)
    return batch


def affine_rows(x: torch.Tensor) -> torch.Tensor:
    return x * 2 + 1


def test_one_process_is_fn_itself_without_gradient():
    x = rank_batch(0).requires_grad_()
    bn = nn.BatchNorm1d(FEATURES).train()
    expected = nn.BatchNorm1d(FEATURES).train()(x.detach())
    out = shuffled_forward(bn, x)
    torch.testing.assert_close(out, expected)
    assert not out.requires_grad
    torch.testing.assert_close(shuffled_forward(affine_rows, x), affine_rows(x.detach()))


class RecordingBatchNorm(nn.BatchNorm1d):
    """A BatchNorm1d that keeps every input it is given, to check what each process computed."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        self.received: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.received.append(x.clone())
        return super().forward(x)


def shuffle_on_rank(rank_index: int, num_ranks: int, out_dir) -> None:
    """Worker: shuffled forward of a row-wise function and of a recording BN; save everything."""
    torch.manual_seed(0)  # rank 0 draws the permutation: a fixed seed makes the test deterministic
    x = rank_batch(rank_index)
    received_affine: list[torch.Tensor] = []

    def recording_affine(batch: torch.Tensor) -> torch.Tensor:
        received_affine.append(batch.clone())
        return affine_rows(batch)

    affine_out = shuffled_forward(recording_affine, x)
    bn = RecordingBatchNorm(FEATURES).train()
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2.0, FEATURES))
        bn.bias.copy_(torch.linspace(-1.0, 1.0, FEATURES))
    bn_out = shuffled_forward(bn, x.requires_grad_())
    torch.save(
        {
            "affine_out": affine_out,
            "affine_received": received_affine[0],
            "bn_out": bn_out,
            "bn_out_requires_grad": bn_out.requires_grad,
            "bn_received": bn.received[0],
            "bn_weight": bn.weight.detach(),
            "bn_bias": bn.bias.detach(),
        },
        out_dir / f"rank{rank_index}.pt",
    )


def train_mode_bn(batch: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """BatchNorm of ``batch`` with its own (biased) statistics, computed independently of nn."""
    mean = batch.mean(dim=0)
    var = batch.var(dim=0, unbiased=False)
    return (batch - mean) / torch.sqrt(var + 1e-5) * weight + bias


def row_positions(rows: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """Index in ``rows`` of each tag (column 0 values are unique row identifiers)."""
    matches = rows[:, 0][None, :] == tags[:, None]
    assert bool((matches.sum(dim=1) == 1).all())
    return matches.float().argmax(dim=1)


@pytest.mark.slow
def test_two_gloo_processes_shuffle_across_ranks_and_restore_the_order(distributed_run, tmp_path):
    num_ranks = 2
    distributed_run(shuffle_on_rank, tmp_path, world_size=num_ranks)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(num_ranks)]
    inputs = [rank_batch(r) for r in range(num_ranks)]
    global_batch = torch.cat(inputs)

    for key in ("affine_received", "bn_received"):
        received = torch.cat([result[key] for result in results])
        # Together the processes computed every sample exactly once ...
        assert sorted(received[:, 0].tolist()) == sorted(global_batch[:, 0].tolist())
        for rank_index, result in enumerate(results):
            # ... but each one got samples of both ranks, not just its own.
            source_ranks = set((result[key][:, 0] // 1000).long().tolist())
            assert source_ranks == set(range(num_ranks)), (key, rank_index)
    # Both calls shuffle, with different permutations drawn from rank 0's generator.
    assert not torch.equal(results[0]["affine_received"], results[0]["bn_received"])

    for rank_index, result in enumerate(results):
        # A row-wise function comes back row by row in the original order.
        torch.testing.assert_close(result["affine_out"], affine_rows(inputs[rank_index]))

        # Each sample is normalised with the statistics of the sub-batch it was shuffled into.
        expected_per_rank = [
            train_mode_bn(other["bn_received"], other["bn_weight"], other["bn_bias"])
            for other in results
        ]
        received = torch.cat([other["bn_received"] for other in results])
        expected_all = torch.cat(expected_per_rank)
        positions = row_positions(received, inputs[rank_index][:, 0])
        torch.testing.assert_close(result["bn_out"], expected_all[positions])
        assert not result["bn_out_requires_grad"]
        # Which differs from normalising the process's own, unshuffled batch.
        own = F.batch_norm(
            inputs[rank_index], None, None, result["bn_weight"], result["bn_bias"], training=True
        )
        assert not torch.allclose(result["bn_out"], own, atol=1e-3)


def test_one_process_splits_emulate_several_bn_batches_and_keep_the_order() -> None:
    torch.manual_seed(0)
    x = torch.randn(12, 5)
    received: list[torch.Tensor] = []

    def normalise(chunk: torch.Tensor) -> torch.Tensor:
        return (chunk - chunk.mean(0)) / chunk.std(0, unbiased=False)

    def batch_norm(chunk: torch.Tensor) -> torch.Tensor:
        received.append(chunk)
        return normalise(chunk)

    out = shuffled_forward(batch_norm, x, splits=3)
    assert len(received) == 3 and all(len(chunk) == 4 for chunk in received)
    for chunk in received:
        for row, expected in zip(chunk, normalise(chunk), strict=True):
            (index,) = torch.nonzero((x == row).all(dim=1)).flatten().tolist()
            torch.testing.assert_close(out[index], expected)
    assert not torch.allclose(out, normalise(x))  # statistics of sub-batches, not of the whole
