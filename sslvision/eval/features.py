"""Feature extraction from a frozen backbone, for the kNN and linear evaluators.

The loader hands over uint8 images as the data pipeline decodes them; scaling to [0, 1] and
normalisation happen here, on the device, with the backbone's own pixel statistics, so evaluation
sees the same inputs as training.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor
from tqdm import tqdm

from sslvision.backbones import Backbone


def extract_features(
    backbone: Backbone,
    loader: Iterable[tuple[Tensor, Tensor]],
    *,
    device: torch.device | str,
    progress: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Run ``backbone`` over every batch of ``loader`` and return (features, labels) on the CPU.

    Batches are uint8 images ``(N, C, H, W)`` with their labels. Features come back as float32
    ``(num_samples, dim)`` in loader order, labels as int64. The backbone runs in eval mode under
    ``torch.inference_mode``; afterwards every submodule gets back the train/eval mode it had, so
    a backbone with frozen BatchNorm layers inside a training model stays as it was. The returned
    tensors are ordinary tensors, usable as inputs of a trained linear probe. ``progress`` shows a
    bar (None: only on a terminal).
    """
    previous_modes = {module: module.training for module in backbone.modules()}
    backbone.eval()
    feature_batches: list[Tensor] = []
    label_batches: list[Tensor] = []
    try:
        with torch.inference_mode():
            for images, labels in tqdm(
                loader,
                desc="features",
                unit="batch",
                disable=None if progress is None else not progress,
            ):
                _check_batch(images, labels, num_channels=len(backbone.pixels.mean))
                features = backbone(backbone.pixels.normalise(images, device))
                if features.ndim != 2 or len(features) != len(images):
                    raise ValueError(
                        "the backbone must return pooled features of shape (batch, dim), got "
                        f"{tuple(features.shape)} for a batch of {len(images)}"
                    )
                feature_batches.append(features.float().cpu())
                label_batches.append(torch.as_tensor(labels).long().cpu())
    finally:
        for module, was_training in previous_modes.items():
            module.training = was_training

    if not feature_batches:
        raise ValueError("the loader yielded no batches, so there are no features to extract")
    # Concatenating outside inference mode turns inference tensors into ordinary ones.
    return torch.cat(feature_batches), torch.cat(label_batches)


def _check_batch(images: Tensor, labels: Tensor, num_channels: int) -> None:
    if images.dtype != torch.uint8:
        raise TypeError(f"the loader must yield uint8 images, got {images.dtype}")
    if images.ndim != 4 or images.shape[1] != num_channels:
        raise ValueError(
            f"the loader must yield images of shape (N, {num_channels}, H, W) to match mean/std, "
            f"got {tuple(images.shape)}"
        )
    if len(labels) != len(images):
        raise ValueError(f"a batch has {len(images)} images but {len(labels)} labels")
