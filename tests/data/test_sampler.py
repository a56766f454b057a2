from __future__ import annotations

import pytest
import torch

from sslvision.data.sampler import ResumableSampler


def _shares(size: int, world_size: int, **kwargs) -> list[list[int]]:
    return [
        list(ResumableSampler(size, seed=7, rank=rank, world_size=world_size, **kwargs))
        for rank in range(world_size)
    ]


def test_single_process_covers_the_dataset_once() -> None:
    order = list(ResumableSampler(50, seed=1))
    assert sorted(order) == list(range(50))
    assert order != list(range(50))


def test_no_shuffle_is_the_identity() -> None:
    assert list(ResumableSampler(5, seed=1, shuffle=False)) == [0, 1, 2, 3, 4]


def test_ranks_are_disjoint_and_cover_the_dataset() -> None:
    shares = _shares(40, world_size=4)
    assert all(len(share) == 10 for share in shares)
    assert sorted(index for share in shares for index in share) == list(range(40))


def test_drop_last_truncates_to_equal_shares() -> None:
    shares = _shares(10, world_size=3)
    assert [len(share) for share in shares] == [3, 3, 3]
    flat = [index for share in shares for index in share]
    assert len(set(flat)) == 9


def test_padding_wraps_around_like_distributed_sampler() -> None:
    shares = _shares(10, world_size=4, drop_last=False)
    assert [len(share) for share in shares] == [3, 3, 3, 3]
    assert set(index for share in shares for index in share) == set(range(10))


def test_padding_works_when_the_dataset_is_smaller_than_the_world() -> None:
    shares = _shares(2, world_size=5, drop_last=False)
    assert all(len(share) == 1 for share in shares)


def test_same_seed_and_epoch_give_the_same_order_regardless_of_global_rng() -> None:
    first = ResumableSampler(30, seed=3)
    second = ResumableSampler(30, seed=3)
    first.set_epoch(4)
    second.set_epoch(4)
    torch.manual_seed(123)
    order = list(first)
    torch.manual_seed(456)
    assert list(second) == order
    state = torch.get_rng_state()
    list(first)
    assert torch.equal(torch.get_rng_state(), state)


def test_epochs_differ() -> None:
    sampler = ResumableSampler(30, seed=3)
    sampler.set_epoch(0)
    epoch_0 = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != epoch_0


def test_order_is_a_function_of_seed_plus_epoch() -> None:
    shifted = ResumableSampler(30, seed=4)
    original = ResumableSampler(30, seed=3)
    original.set_epoch(1)
    assert list(shifted) == list(original)


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_start_index_resumes_exactly_the_tail(rank: int) -> None:
    sampler = ResumableSampler(31, seed=9, rank=rank, world_size=3)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start_index=4)
    assert list(sampler) == full[4:]
    assert len(sampler) == len(full) - 4 == sampler.num_samples_per_rank() - 4


def test_start_index_at_the_end_yields_nothing() -> None:
    sampler = ResumableSampler(8, seed=0, world_size=2, rank=1)
    sampler.set_epoch(0, start_index=4)
    assert len(sampler) == 0 and list(sampler) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"world_size": 0}, "world_size must be at least 1"),
        ({"rank": 2, "world_size": 2}, r"rank must be in \[0, 2\), got 2"),
        ({"dataset_size": 0}, "dataset_size must be positive"),
        ({"dataset_size": 2, "world_size": 4}, "smaller than world_size 4"),
    ],
)
def test_bad_arguments_are_explained(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ResumableSampler(**{"dataset_size": 10, "seed": 0, **arguments})


def test_start_index_beyond_the_share_is_rejected() -> None:
    sampler = ResumableSampler(10, seed=0, world_size=2)
    with pytest.raises(ValueError, match=r"start_index must be in \[0, 5\]"):
        sampler.set_epoch(0, start_index=6)
