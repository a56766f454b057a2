"""BatchNorm statistics for a random init: the fair baseline of every evaluator.

A freshly built network's BatchNorm layers hold their initial running statistics (mean 0,
variance 1), so in eval mode it is an un-normalised network, and "beats the random init" would mean
"beats a network whose activations are not normalised". The fair random baseline keeps the random
weights bitwise and estimates each BatchNorm layer's statistics on the evaluator's training images:
one deterministic pass in train mode with cumulative (not exponential) averaging.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from tqdm import tqdm

from sslvision.backbones import Backbone


@torch.no_grad()
def estimate_bn_statistics(
    backbone: Backbone,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    device: torch.device | str,
    progress: bool | None = None,
) -> int:
    """Replace every BatchNorm layer's running statistics by their average over ``batches``
    (uint8 images with labels, the evaluator's training split, normalised with the backbone's
    pixel statistics); returns the number of images.

    Only the BatchNorm layers run in train mode, each with ``momentum=None`` (a cumulative
    average over all batches); parameters are not touched, and every module's mode and momentum
    come back as they were.
    """
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    modes = {module: module.training for module in backbone.modules()}
    momenta = {norm: norm.momentum for norm in norms}
    backbone.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    seen = 0
    try:
        disable = None if progress is None else not progress
        for images, _ in tqdm(batches, desc="BN statistics", unit="batch", disable=disable):
            backbone(backbone.pixels.normalise(images, device))
            seen += len(images)
    finally:
        for module, was_training in modes.items():
            module.training = was_training
        for norm, momentum in momenta.items():
            norm.momentum = momentum
    return seen
