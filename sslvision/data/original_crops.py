"""Each view's RandomResizedCrop drawn on the image's original size and cut as uint8 on a worker.

The papers' crop (the Inception crop of Szegedy et al. 2015, which SimCLR, MoCo and BYOL take
from torchvision): a box covering a fraction ``scale`` of the original image's area, with an
aspect ratio drawn log-uniformly in ``ratio``, in the original's pixels. Squashing every image
to a square first (``data.crop=squash``) distorts objects and shifts both statistics on
non-square photographs; it stays the choice for data that is square already (CIFAR, the 64 px
sets). Here the worker decodes once, cuts each view's box and resizes it to the view size
(integer work, bounded by the view size); flips, colour and blur stay batched on the device.

The boxes come from torchvision's own sampler seeded per sample by ``(run seed, epoch,
index)`` (:class:`~sslvision.data.sampler.ResumableSampler` with ``seeded=True``), so the
crops do not depend on the worker count, the batch size or a resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2.functional import resized_crop

from sslvision.config.views import ViewGroup
from sslvision.errors import ConfigError


class HasOriginals(Protocol):
    """A dataset that can hand out its images at their own size."""

    def __len__(self) -> int: ...

    def read_original(self, index: int) -> tuple[Tensor, int]: ...


def cut_views(image: Tensor, groups: Sequence[ViewGroup], seed: int) -> tuple[list, list]:
    """Every view of ``image`` (uint8 (3, H, W)): per group, crops (count, 3, s, s) uint8 and
    boxes (count, 4) as ``x1, y1, x2, y2`` in the original's pixels (full image: 0, 0, W, H).

    The draws use torch's global CPU generator, seeded with ``seed`` and put back as it was
    afterwards (with no workers the loader runs in the training process, whose stream draws the
    device augmentation; ``fork_rng`` does the same at 60 times the cost, measured).
    """
    crops, boxes = [], []
    caller_state = torch.get_rng_state()
    torch.default_generator.manual_seed(seed)
    try:
        for group in groups:
            group_crops, group_boxes = [], []
            for _ in range(group.count):
                top, left, height, width = RandomResizedCrop.get_params(
                    image, list(group.scale), list(group.ratio)
                )
                size = [group.size, group.size]
                group_crops.append(resized_crop(image, top, left, height, width, size))
                group_boxes.append([left, top, left + width, top + height])
            crops.append(torch.stack(group_crops))
            boxes.append(torch.tensor(group_boxes, dtype=torch.float32))
    finally:
        torch.set_rng_state(caller_state)
    return crops, boxes


class OriginalSizeCrops(Dataset):
    """``source``'s images as their views' uint8 crops, cut from the original size.

    An item is ``(index, seed)`` (what a seeded sampler yields) and gives ``(crops, boxes,
    label)`` with one entry per view group, as :meth:`ViewPipeline.forward` takes them once
    batched.
    """

    def __init__(self, source: Any, groups: Sequence[ViewGroup], dataset_name: str) -> None:
        if not callable(getattr(source, "read_original", None)):
            raise ConfigError(
                f"data.crop=original needs images at their own size; data.dataset "
                f"'{dataset_name}' has only squares of data.image_size (the 'folder' data set "
                "keeps its originals): use data.crop=squash"
            )
        self.source: HasOriginals = source
        self.groups = list(groups)
        self.num_classes = getattr(source, "num_classes", 0)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int]) -> tuple[list[Tensor], list[Tensor], int]:
        index, seed = item
        image, label = self.source.read_original(index)
        crops, boxes = cut_views(image, self.groups, seed)
        return crops, boxes, label
