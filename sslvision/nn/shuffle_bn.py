"""MoCo's shuffling BN: the key encoder's BatchNorm sees a different sub-batch than the query's.

He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020, sec. 3.3: with per-process BatchNorm, a query and its positive key computed in the same
sub-batch share its batch statistics, which leak information and let the model "cheat" the pretext
task. Shuffling the samples across processes before the key encoder (and restoring the order
after) gives each key its statistics from a different mix of samples than its query.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor

from sslvision.nn.distributed import gather_no_grad, is_distributed, rank, world_size


@torch.no_grad()
def shuffled_forward(fn: Callable[[Tensor], Tensor], x: Tensor, splits: int = 1) -> Tensor:
    """``fn(x)`` computed on a batch shuffled across processes, returned in ``x``'s order.

    Every process must call it with the same batch size (a collective). Rank 0 draws a random
    permutation of the global batch from its default generator and broadcasts it; each process
    runs ``fn`` on its slice of the permuted batch, and the outputs are gathered and unpermuted,
    so each process gets the rows of its own samples back. Runs under ``torch.no_grad``: it is for
    keys, which receive no gradient (BatchNorm in train mode still updates its running stats).

    With one process there is one BN batch, and shuffling within it changes no statistic. There,
    ``splits > 1`` emulates several processes as the MoCo authors' one-GPU demo does: the batch is
    shuffled, ``fn`` runs on each of ``splits`` chunks (its own BN statistics each) and the order
    is restored (at most half the batch size of splits, so each holds two samples or more). With
    ``splits=1`` it is ``fn(x)``.

    >>> double = lambda t: 2 * t
    >>> shuffled_forward(double, torch.arange(3.0)).tolist()
    [0.0, 2.0, 4.0]
    """
    if not is_distributed():
        splits = min(splits, x.shape[0] // 2)  # BatchNorm needs two samples per batch
        if splits <= 1:
            return fn(x)
        permutation = torch.randperm(x.shape[0], device=x.device)
        out = torch.cat([fn(chunk) for chunk in x[permutation].chunk(splits)])
        return out[torch.argsort(permutation)]
    n = x.shape[0]
    sizes = gather_no_grad(torch.tensor([n], device=x.device))
    if not bool((sizes == n).all()):
        raise ValueError(f"shuffled_forward needs the same batch size on every process: {sizes}")
    x_all = gather_no_grad(x)
    permutation = (
        torch.randperm(x_all.shape[0], device=x.device)
        if rank() == 0
        else torch.empty(x_all.shape[0], dtype=torch.long, device=x.device)
    )
    dist.broadcast(permutation, src=0)
    # This process computes global samples permutation[rank * n : (rank + 1) * n].
    here = rank()
    out = fn(x_all[permutation.view(world_size(), n)[here]])
    out_all = gather_no_grad(out)
    # out_all[j] belongs to sample permutation[j]; the inverse permutation finds each sample's row.
    inverse = torch.argsort(permutation)
    return out_all[inverse.view(world_size(), n)[here]]
