"""SwAV's prototypes: K trainable unit vectors scored against L2-normalised features.

Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
NeurIPS 2020, sec. 3.1: the features z and the prototypes c_k lie on the unit sphere, so a score
z^T c_k is a cosine similarity. The prototypes are a bias-free linear layer whose weight rows are
re-normalised after every optimiser step (the authors re-normalise before each forward pass, which
is the same sequence of weights once the rows start unit, as they do here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Prototypes(nn.Module):
    """``num_prototypes`` unit vectors of width ``dim``: the weight rows of ``layer`` (no bias).

    Freezing: the paper keeps the prototypes fixed during the first epoch (the authors' code: for
    ``freeze_prototypes_niters`` iterations) by dropping their gradient after backward:
    :meth:`drop_gradient_`. With ``.grad`` None, SGD, AdamW and LARS skip the parameter entirely
    (no momentum, no weight decay). Dropping it after backward rather than detaching the weight in
    the forward keeps the parameter used, which DistributedDataParallel requires.

    Call :meth:`normalize_` after every optimiser step to put the rows back on the unit sphere.

    >>> prototypes = Prototypes(dim=16, num_prototypes=10)
    >>> prototypes(torch.randn(4, 16)).shape
    torch.Size([4, 10])
    """

    def __init__(self, dim: int, num_prototypes: int = 3000) -> None:
        super().__init__()
        if dim < 1 or num_prototypes < 1:
            raise ValueError(
                f"prototypes need dim >= 1 and num_prototypes >= 1, got {dim}, {num_prototypes}"
            )
        self.dim = dim
        self.num_prototypes = num_prototypes
        self.layer = nn.Linear(dim, num_prototypes, bias=False)
        self.normalize_()

    def forward(self, x: Tensor) -> Tensor:
        """Scores (B, K) = normalize(x) @ W^T: cosines while the rows of W are unit.

        W is used as it stands (not re-normalised here).
        """
        return F.linear(F.normalize(x, dim=1), self.layer.weight)

    def drop_gradient_(self) -> None:
        """Forget the prototypes' gradient (after backward, before the step): a frozen step."""
        self.layer.weight.grad = None

    @torch.no_grad()
    def normalize_(self) -> None:
        """L2-normalise the weight rows in place: the same Parameter, so the optimiser keeps it."""
        weight = self.layer.weight
        weight.copy_(F.normalize(weight, dim=1))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_prototypes={self.num_prototypes}"
