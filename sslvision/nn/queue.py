"""A FIFO queue of past keys: MoCo's large, batch-size-independent set of negatives.

He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020, sec. 3.2: the keys of each batch are enqueued and the oldest dequeued, so the number of
negatives is decoupled from the batch size. The same queue serves any method that contrasts or
clusters against recent features (e.g. SwAV's queue, NNCLR's support set).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslvision.nn.distributed import gather_no_grad, is_distributed


class FeatureQueue(nn.Module):
    """A ring buffer of ``length`` feature rows of width ``dim``, kept in the state dict.

    ``features``, ``ptr`` (next write position) and ``count`` (valid rows) are buffers, so a
    checkpoint resumes the queue exactly. With ``random_init`` the queue starts full of random
    unit vectors, as MoCo does, and is usable as negatives from the first step; otherwise it starts
    empty and :meth:`contents` grows until ``length`` rows have been written.

    With ``gather`` and several processes, :meth:`enqueue` all-gathers the keys in rank order, so
    every process holds the same queue (as in MoCo); it is then a collective that every process
    must call, with the same batch size on each. With random initialisation the starting rows come
    from each process's generator: seed the processes alike (or let DistributedDataParallel
    broadcast the buffers) for the unwritten rows to agree too.

    >>> queue = FeatureQueue(length=5, dim=2, random_init=False)
    >>> queue.enqueue(torch.ones(3, 2))
    >>> queue.enqueue(torch.zeros(3, 2))
    >>> queue.contents()[:, 0].tolist(), int(queue.ptr), queue.is_full
    ([0.0, 1.0, 1.0, 0.0, 0.0], 1, True)
    """

    features: Tensor
    ptr: Tensor
    count: Tensor

    def __init__(
        self, length: int, dim: int, *, gather: bool = True, random_init: bool = True
    ) -> None:
        super().__init__()
        if length < 1 or dim < 1:
            raise ValueError(f"a feature queue needs length >= 1 and dim >= 1, got {length}, {dim}")
        self.length = length
        self.dim = dim
        self.gather = gather
        self.random_init = random_init
        if random_init:
            features = F.normalize(torch.randn(length, dim), dim=1)
        else:
            features = torch.zeros(length, dim)
        self.register_buffer("features", features)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.tensor(length if random_init else 0))

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` (n, dim) over the oldest rows, for any n.

        Keys are stored detached and cast to the queue's dtype (float32), not re-normalised: the
        caller decides what a key is. Row ``k`` of the stream of enqueued keys (counting from the
        queue's creation) lands at position ``k % length``; a batch longer than the queue leaves
        its last ``length`` rows. No host-device synchronisation: positions are computed on the
        queue's device.
        """
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(
                f"a queue of dim {self.dim} takes keys of shape (n, {self.dim}), got "
                f"{tuple(keys.shape)}"
            )
        if self.gather and is_distributed():
            keys = gather_no_grad(keys)
        keys = keys.detach()
        n = keys.shape[0]
        if n == 0:
            return
        kept = min(n, self.length)
        keys = keys[n - kept :].to(self.features)
        # The skipped n - kept rows would have been overwritten within this same batch.
        offsets = torch.arange(n - kept, n, device=self.features.device)
        positions = (self.ptr + offsets) % self.length
        self.features.index_copy_(0, positions, keys)
        self.ptr.copy_((self.ptr + n) % self.length)
        self.count.copy_(torch.clamp(self.count + n, max=self.length))

    def contents(self) -> Tensor:
        """The valid rows (a view, not a copy): all ``length`` once full, else the first ``count``.

        The order is storage order, not age: once the queue has wrapped, the oldest row is at
        ``ptr``. Contrastive losses treat the rows as an unordered set of negatives; roll by
        ``-ptr`` for oldest-first order.
        """
        if self.is_full:
            return self.features
        return self.features[: int(self.count)]

    @property
    def is_full(self) -> bool:
        """Whether every row holds a key (always, with random initialisation)."""
        return int(self.count) == self.length

    def extra_repr(self) -> str:
        return (
            f"length={self.length}, dim={self.dim}, gather={self.gather}, "
            f"random_init={self.random_init}"
        )


def process_local_buffers(module: nn.Module) -> list[str]:
    """State-dict names of the buffers of ``module``'s per-process queues (``gather=False``).

    Each process fills such a queue with its own features (SwAV), so DistributedDataParallel must
    not overwrite it with rank 0's copy before every forward, and a checkpoint keeps every
    process's copy. Gathered queues are the same everywhere and need neither.
    """
    return [
        f"{prefix}.{name}" if prefix else name
        for prefix, queue in module.named_modules()
        if isinstance(queue, FeatureQueue) and not queue.gather
        for name, _ in queue.named_buffers(recurse=False)
    ]
