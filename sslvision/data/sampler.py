"""The training sampler: per-epoch seeded order, split across ranks, resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Yields this rank's share of epoch ``e``'s order, optionally from ``start_index`` on.

    With ``seeded`` it yields ``(index, crop_seed)``: the seed a dataset draws that sample's
    random crops from, a function of (seed, epoch, index) only, so the same whichever rank,
    worker, batch or resume reads it.

    The order of epoch ``e`` depends only on ``seed + e`` (a private ``torch.Generator``), so a
    resumed run sees exactly the indices it would have seen. Like ``DistributedSampler`` the
    order is truncated (``drop_last``) or padded by wrapping around so that every rank gets the
    same count; rank ``r`` takes positions ``r::world_size``.

    >>> sampler = ResumableSampler(10, seed=0, rank=1, world_size=2)
    >>> sampler.set_epoch(3, start_index=2)
    >>> len(sampler), sampler.num_samples_per_rank()
    (3, 5)
    """

    def __init__(
        self,
        dataset_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
        seeded: bool = False,
    ) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be at least 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if dataset_size < 1:
            raise ValueError(f"dataset_size must be positive, got {dataset_size}")
        if drop_last and dataset_size < world_size:
            raise ValueError(
                f"dataset_size {dataset_size} is smaller than world_size {world_size}: "
                "with drop_last=True every rank would get no samples"
            )
        self.dataset_size = dataset_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seeded = seeded
        self.epoch = 0
        self.start_index = 0

    def num_samples_per_rank(self) -> int:
        """Samples each rank sees in a full epoch."""
        if self.drop_last:
            return self.dataset_size // self.world_size
        return -(-self.dataset_size // self.world_size)

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        """Select epoch ``epoch``'s order and skip the first ``start_index`` samples of it."""
        if not 0 <= start_index <= self.num_samples_per_rank():
            raise ValueError(
                f"start_index must be in [0, {self.num_samples_per_rank()}] "
                f"(samples per rank), got {start_index}"
            )
        self.epoch = epoch
        self.start_index = start_index

    def __len__(self) -> int:
        return self.num_samples_per_rank() - self.start_index

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_size, generator=generator)
        else:
            order = torch.arange(self.dataset_size)
        total = self.num_samples_per_rank() * self.world_size
        if total > self.dataset_size:
            repeats = -(-total // self.dataset_size)
            order = order.repeat(repeats)
        share = order[:total][self.rank :: self.world_size][self.start_index :].tolist()
        if self.seeded:
            seeds = self.crop_seeds().tolist()
            return iter([(index, seeds[index]) for index in share])
        return iter(share)

    def crop_seeds(self) -> torch.Tensor:
        """Epoch ``epoch``'s crop seed of every sample, by index: one vectorised draw from a
        generator that numpy's SeedSequence keys with (seed, epoch), apart from the order's."""
        key = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(key)
        return torch.randint(2**31 - 1, (self.dataset_size,), generator=generator)
