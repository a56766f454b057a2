"""The precision losses compute in: at least float32, so that bf16 activations (autocast) are
normalised and exponentiated in float32, and float64 ones are never rounded down."""

from __future__ import annotations

import torch
from torch import Tensor


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32 if its dtype is narrower, else unchanged.

    >>> at_least_float32(torch.ones(1, dtype=torch.bfloat16)).dtype, at_least_float32(
    ...     torch.ones(1, dtype=torch.float64)).dtype
    (torch.float32, torch.float64)
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))
