"""Batched view augmentation on the training device with kornia, keeping each view's crop box.

The loader hands over uint8 images; everything float happens here, once per batch and on the
device, so CPU workers only decode. Random parameters are drawn per sample from torch's global
RNG (kornia samples on the CPU), so ``torch.manual_seed`` before a call fixes its views.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from sslvision.augment.blur import RandomGaussianBlur
from sslvision.augment.views import Views, ViewStack
from sslvision.config.views import ViewGroup

CPU_CHUNK_PIXELS = 2**19
"""View pixels a CPU augments per pass of :class:`GroupAugment` (about 6 MB of float32)."""


class GroupAugment(nn.Module):
    """Makes the ``count`` views of one :class:`ViewGroup` from a float batch in one pass.

    The batch is repeated ``count`` times so that every op runs once per group, not once per
    view: kornia's per-call overhead is milliseconds, which multi-crop would otherwise pay many
    times. Colour jitter is the exception: kornia draws one jitter order per call, so each view
    gets its own call, which keeps the two views of an image from sharing their order.
    Ops with probability 0 are not built, so they cost nothing. The blur is ours
    (:mod:`sslvision.augment.blur`): kornia's per-sample-sigma convolution was the slowest op.
    """

    def __init__(self, group: ViewGroup) -> None:
        super().__init__()
        self.group = group
        size = (group.size, group.size)
        # "resample" warps the whole batch in one call; kornia's "slice" mode loops over samples
        # in Python, which measured no faster on 2 CPU cores and would dominate on a GPU.
        self.crop = K.RandomResizedCrop(size, group.scale, group.ratio, cropping_mode="resample")
        self.flip = K.RandomHorizontalFlip(p=group.hflip_p) if group.hflip_p > 0 else None
        self.jitter = (
            K.ColorJitter(  # torchvision's formulas (ColorJiggle uses kornia's own)
                group.brightness, group.contrast, group.saturation, group.hue, p=group.jitter_p
            )
            if group.jitter_enabled
            else None
        )
        later_ops = [
            K.RandomGrayscale(p=group.grayscale_p) if group.grayscale_p > 0 else None,
            RandomGaussianBlur(group.blur_kernel_size, group.blur_sigma, p=group.blur_p)
            if group.blur_p > 0
            else None,
            K.RandomSolarize(thresholds=(0.5, 0.5), additions=(0.0, 0.0), p=group.solarize_p)
            if group.solarize_p > 0
            else None,
        ]
        self.later_ops = nn.Sequential(*[op for op in later_ops if op is not None])

    def forward(self, images: Tensor, cut_boxes: Tensor | None = None) -> tuple[Tensor, ...]:
        """``images`` (N,3,H,W) float in [0, 1] -> views (count*N,3,s,s), boxes, flip flags.

        With ``cut_boxes`` (N, count, 4) the crops were cut already (from the original images,
        :mod:`sslvision.data.original_crops`): ``images`` is (N, count, 3, s, s) and the crop is
        skipped. Rows are view-major: rows ``[k*N, (k+1)*N)`` are the group's view ``k``.

        On a CPU the batch goes through in chunks of about :data:`CPU_CHUNK_PIXELS` view pixels:
        kornia's ops make several full-size temporaries each, and chunks that stay in the caches
        made the SimCLR pipeline 2.8x faster at 224 px and 1.26x at 64 px on 2 cores (the budget
        was the best of 2^16 to 2^20). A GPU takes the whole batch in one pass.
        """
        count, batch = self.group.count, images.shape[0]
        chunk = max(1, CPU_CHUNK_PIXELS // (count * self.group.size**2))
        if images.device.type != "cpu" or chunk >= batch:
            return self._augment(images, cut_boxes)
        parts = [
            self._augment(
                images[i : i + chunk], None if cut_boxes is None else cut_boxes[i : i + chunk]
            )
            for i in range(0, batch, chunk)
        ]
        # Each part is view-major over its own rows: regroup so that view k's rows are together.
        return tuple(
            torch.cat([t.unflatten(0, (count, -1)) for t in pieces], dim=1).flatten(0, 1)
            for pieces in zip(*parts, strict=True)
        )

    def _augment(self, images: Tensor, cut_boxes: Tensor | None) -> tuple[Tensor, ...]:
        count = self.group.count
        if cut_boxes is not None:
            x = images.transpose(0, 1).flatten(0, 1)
            boxes = cut_boxes.transpose(0, 1).flatten(0, 1).float()
        else:
            x = images.repeat(count, 1, 1, 1) if count > 1 else images
            crop_params = self.crop.forward_parameters(x.shape)
            x = self.crop(x, params=crop_params)
            # kornia's corners are (x, y) pixel indices, both ends inclusive, ordered tl, tr, br,
            # bl; the exclusive far edge makes them continuous coordinates (full image: 0,0,W,H).
            corners = crop_params["src"].to(device=x.device, dtype=torch.float32)
            boxes = torch.cat([corners[:, 0], corners[:, 2] + 1], dim=1)

        if self.flip is None:
            flips = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        else:
            flip_params = self.flip.forward_parameters(x.shape)
            x = self.flip(x, params=flip_params)
            flips = flip_params["batch_prob"].to(x.device) > 0.5

        if self.jitter is not None:
            x = torch.cat([self.jitter(view) for view in x.chunk(count)])
        return self.later_ops(x), boxes, flips

    def extra_repr(self) -> str:
        return repr(self.group)


class ViewPipeline(nn.Module):
    """uint8 image batch -> :class:`Views`, one :class:`GroupAugment` per view group.

    Consecutive groups of the same size are written, already normalised and in
    ``memory_format``, into one tensor: that tensor is what a method forwards, and every view is a
    slice of it, so a view is materialised once after augmentation.

    >>> pipeline = ViewPipeline([ViewGroup(count=2, size=32)], (0.5,) * 3, (0.25,) * 3)
    >>> views = pipeline(torch.randint(0, 256, (4, 3, 48, 48), dtype=torch.uint8))
    >>> len(views), tuple(views.images[0].shape), tuple(views.boxes[0].shape)
    (2, (4, 3, 32, 32), (4, 4))
    """

    def __init__(
        self,
        groups: Sequence[ViewGroup],
        mean: Sequence[float],
        std: Sequence[float],
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        super().__init__()
        if not groups:
            raise ValueError("ViewPipeline needs at least one ViewGroup")
        flags = [g.is_global for g in groups]
        if flags != sorted(flags, reverse=True):
            raise ValueError(
                "ViewPipeline expects global view groups before local ones (is_global per group: "
                f"{flags}), so that the leading views are the global ones"
            )
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got mean={mean!r}, std={std!r}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be positive, got {std!r}")
        self.mean, self.std = tuple(mean), tuple(std)
        self.memory_format = memory_format
        self.global_count = sum(g.count for g in groups if g.is_global)
        self.groups = nn.ModuleList(GroupAugment(g) for g in groups)
        self.register_buffer("channel_mean", torch.tensor(self.mean).view(1, 3, 1, 1), False)
        self.register_buffer("channel_std", torch.tensor(self.std).view(1, 3, 1, 1), False)

    @torch.no_grad()
    def forward(
        self,
        images: Tensor | Sequence[Tensor],
        labels: Tensor | None = None,
        boxes: Sequence[Tensor] | None = None,
    ) -> Views:
        """Views of ``images``; ``labels`` (the dataset's, for SupCon) travel with them.

        ``images`` is a uint8 batch (N, 3, H, W) that every group crops, or, with ``boxes``, one
        uint8 batch of crops already cut per group (N, count, 3, size, size) with their boxes
        (N, count, 4) in source-image pixels (``data.crop=original``).
        """
        if boxes is None:
            _check_uint8(images, 4, "(N, 3, H, W)")
            source = images.float().div_(255)
            inputs = [(source, None)] * len(self.groups)
        else:
            inputs = self._cut_inputs(images, boxes)
        runs: list[Tensor] = []
        counts: list[int] = []
        all_boxes: list[Tensor] = []
        all_flips: list[Tensor] = []
        batch, device = len(inputs[0][0]), inputs[0][0].device
        next_input = iter(inputs)
        for size, same_size in groupby(self.groups, key=lambda g: g.group.size):
            same_size = list(same_size)
            rows = [g.group.count * batch for g in same_size]
            run = torch.empty(
                (sum(rows), 3, size, size), device=device, memory_format=self.memory_format
            )
            for group, out in zip(same_size, run.split(rows), strict=True):
                crops, group_boxes, flips = group(*next(next_input))
                torch.sub(crops, self.channel_mean, out=out).div_(self.channel_std)
                all_boxes.append(group_boxes)
                all_flips.append(flips)
            runs.append(run)
            counts.append(sum(g.group.count for g in same_size))
        group_counts = [g.group.count for g in self.groups]
        return Views(
            ViewStack(runs, counts),
            ViewStack(all_boxes, group_counts),
            ViewStack(all_flips, group_counts),
            self.global_count,
            labels,
        )

    def _cut_inputs(
        self, crops: Sequence[Tensor], boxes: Sequence[Tensor]
    ) -> list[tuple[Tensor, Tensor]]:
        """Each group's float crops in [0, 1] and boxes, checked against the group's recipe."""
        if len(crops) != len(self.groups) or len(boxes) != len(self.groups):
            raise ValueError(
                f"ViewPipeline has {len(self.groups)} view groups but was given crops of "
                f"{len(crops)} and boxes of {len(boxes)}"
            )
        inputs = []
        for group, group_crops, group_boxes in zip(self.groups, crops, boxes, strict=True):
            count, size = group.group.count, group.group.size
            _check_uint8(group_crops, 5, f"(N, {count}, 3, {size}, {size})")
            rows = len(group_crops)
            crops_ok = tuple(group_crops.shape) == (rows, count, 3, size, size)
            if not crops_ok or tuple(group_boxes.shape) != (rows, count, 4):
                raise ValueError(
                    f"crops of a group of {count} views at {size} px must be (N, {count}, 3, "
                    f"{size}, {size}) with boxes (N, {count}, 4), got {tuple(group_crops.shape)} "
                    f"and {tuple(group_boxes.shape)}"
                )
            inputs.append((group_crops.float().div_(255), group_boxes))
        return inputs

    def extra_repr(self) -> str:
        return (
            f"views={self.global_count} global + "
            f"{sum(g.group.count for g in self.groups) - self.global_count} local, "
            f"mean={self.mean}, std={self.std}, memory_format={self.memory_format}"
        )


def _check_uint8(images: Tensor, ndim: int, shape: str) -> None:
    shape_ok = images.ndim == ndim and images.shape[0] > 0 and images.shape[-3] == 3
    if images.dtype != torch.uint8 or not shape_ok:
        raise ValueError(
            f"ViewPipeline expects a non-empty uint8 image batch of shape {shape}, got "
            f"{images.dtype} of shape {tuple(images.shape)}"
        )
