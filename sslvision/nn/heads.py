"""Projection and prediction heads shared by the methods: on vectors, and on feature maps."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def _head_layers(
    linear: Callable[[int, int, bool], nn.Module],
    norm: Callable[[int], nn.Module],
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int,
    hidden_bn: bool,
    last_bias: bool = True,
) -> list[nn.Module]:
    """``num_layers`` linear maps with norm (optional) and ReLU between them, as one list."""
    if num_layers < 1:
        raise ValueError(f"a head needs at least one layer, got num_layers={num_layers}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        if hidden_bn:  # the norm's shift makes a bias redundant
            layers += [linear(dim, hidden_dim, False), norm(hidden_dim)]
        else:
            layers.append(linear(dim, hidden_dim, True))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(linear(dim, out_dim, last_bias))
    return layers


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
        layers = _head_layers(
            lambda i, o, bias: nn.Linear(i, o, bias=bias),
            nn.BatchNorm1d,
            in_dim,
            hidden_dim,
            out_dim,
            num_layers,
            hidden_bn,
            last_bias=not last_bn,
        )
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        super().__init__(*layers)


class ConvHead(nn.Sequential):
    """:class:`MLPHead` on every cell of a feature map: 1x1 convolutions, BN and ReLU between.

    The dense heads of DenseCL (Wang et al. 2021: conv-ReLU-conv, ``hidden_bn=False``)
    and PixPro (Xie et al. 2021: conv-BN-ReLU-conv) keep the spatial layout, so every
    location gets its own projection. ``num_layers=1`` is a single 1x1 convolution, a linear map of
    each cell (PixPro's propagation transform).

    >>> import torch
    >>> head = ConvHead(512, 2048, 128)
    >>> head(torch.zeros(2, 512, 7, 7)).shape
    torch.Size([2, 128, 7, 7])
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        hidden_bn: bool = True,
    ) -> None:
        super().__init__(
            *_head_layers(
                lambda i, o, bias: nn.Conv2d(i, o, kernel_size=1, bias=bias),
                nn.BatchNorm2d,
                in_dim,
                hidden_dim,
                out_dim,
                num_layers,
                hidden_bn,
            )
        )
