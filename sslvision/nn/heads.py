"""Projection and prediction heads shared by the methods."""

from __future__ import annotations

from torch import nn


class MLPHead(nn.Sequential):
    """Linear layers with BN and ReLU between them (SimCLR's projection head, Chen et al. 2020).

    ``num_layers`` counts linear layers; the hidden ones are Linear-BN-ReLU (Linear-ReLU with
    ``hidden_bn=False``, MoCo v2's head). ``last_bn`` adds a BatchNorm without affine parameters
    after the output, as MoCo v3 and SimCLR v2 do.

    >>> import torch
    >>> head = MLPHead(512, 2048, 128)
    >>> head(torch.zeros(4, 512)).shape
    torch.Size([4, 128])
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        last_bn: bool = False,
        hidden_bn: bool = True,
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"an MLP head needs at least one layer, got num_layers={num_layers}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            if hidden_bn:
                layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim)]
            else:
                layers.append(nn.Linear(dim, hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        super().__init__(*layers)
