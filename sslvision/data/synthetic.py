"""The embedded default dataset: procedurally drawn shapes and textures, no download needed.

The class is the *shape or texture* only. Colours, size, position, rotation (where rotating
keeps the class) and noise are random and independent of the class, so the classes are separable
by augmentation-invariant features (what SSL should learn) but not by colour statistics or raw
pixels. Each shape fills most of the frame, so that a random crop nearly always keeps part of it:
with small objects, the only thing two crops of an image share is the background colour, and
contrastive learning then learns colour instead of shape (earlier versions measured exactly
that). For the same reason there is no per-image clutter or shading, which would be instance cues
unrelated to the class.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

_SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}
_SUPERSAMPLE = 2  # shape masks are drawn at 2x and averaged down: antialiased edges
_CHUNK = 1024  # images drawn at once; bounds the float memory for large sets
_MIN_LUMA_CONTRAST = 0.35  # keeps the shape visible after grayscale augmentation


class SyntheticShapesDataset(Dataset):
    """``num_images`` uint8 (3, S, S) images of ``num_classes`` shapes, balanced, seeded.

    Everything is generated at construction with vectorised torch ops from a private
    generator, so the same (seed, split) always gives the same tensor, and the splits
    ("train", "val", "test") use disjoint seed streams.
    """

    def __init__(
        self,
        num_images: int = 5000,
        image_size: int = 32,
        num_classes: int = 10,
        seed: int = 0,
        split: str = "train",
    ) -> None:
        if split not in _SPLIT_STREAMS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(_SPLIT_STREAMS)}")
        if not 2 <= num_classes <= len(SHAPES):
            raise ValueError(
                f"num_classes must be between 2 and {len(SHAPES)} (the shapes available), "
                f"got {num_classes}"
            )
        if num_images < num_classes:
            raise ValueError(f"num_images ({num_images}) must be at least num_classes")
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
        generator = torch.Generator().manual_seed(
            len(_SPLIT_STREAMS) * seed + _SPLIT_STREAMS[split]
        )
        # Drawn grouped by class (so each shape function sees contiguous slices, no gathers),
        # then shuffled once at the end.
        grouped_labels = torch.arange(num_images) * num_classes // num_images
        params = _draw_parameters(grouped_labels, generator)
        noise_seed = int(torch.randint(0, 2**62, (), generator=generator))
        grouped_images = torch.cat(
            [
                _render(
                    grouped_labels[start : start + _CHUNK],
                    {name: value[start : start + _CHUNK] for name, value in params.items()},
                    image_size,
                    noise_seed + start,
                )
                for start in range(0, num_images, _CHUNK)
            ]
        )
        shuffle = torch.randperm(num_images, generator=generator)
        self.images = grouped_images[shuffle]
        self.targets: list[int] = grouped_labels[shuffle].tolist()
        self.classes: list[str] = list(SHAPES)[:num_classes]
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.targets[index]


# Each shape maps rotated, size-normalised coordinates (u, v) (the object spans about
# [-1, 1]), the un-normalised rotated coordinates (a, b) in image units (for textures whose
# period must not scale with the object) and a per-image period to a {0, 1} mask.
ShapeMask = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor
]


def _disk(u, v, a, b, period):
    return u**2 + v**2 <= 1.0


def _ring(u, v, a, b, period):
    radius_squared = u**2 + v**2
    return (radius_squared <= 1.0) & (radius_squared >= 0.55**2)


def _square(u, v, a, b, period):
    return torch.maximum(u.abs(), v.abs()) <= 0.8


def _frame(u, v, a, b, period):
    chebyshev = torch.maximum(u.abs(), v.abs())
    return (chebyshev <= 0.85) & (chebyshev >= 0.5)


def _triangle(u, v, a, b, period):
    inside = torch.ones_like(u, dtype=torch.bool)
    for corner in range(3):
        angle = math.pi / 2 + corner * 2 * math.pi / 3
        inside &= u * math.cos(angle) + v * math.sin(angle) <= 0.5
    return inside


def _plus(u, v, a, b, period):
    half_width = 0.3
    return ((u.abs() <= half_width) & (v.abs() <= 1.0)) | (
        (v.abs() <= half_width) & (u.abs() <= 1.0)
    )


def _textured_patch(u, v, texture):
    return (torch.maximum(u.abs(), v.abs()) <= 1.0) & texture


def _horizontal_stripes(u, v, a, b, period):
    return _textured_patch(u, v, torch.remainder(b / period, 1.0) < 0.5)


def _vertical_stripes(u, v, a, b, period):
    return _textured_patch(u, v, torch.remainder(a / period, 1.0) < 0.5)


def _checkerboard(u, v, a, b, period):
    cell = 0.7 * period
    cells = torch.floor(a / cell) + torch.floor(b / cell)
    return _textured_patch(u, v, torch.remainder(cells, 2.0) < 1.0)


def _dots(u, v, a, b, period):
    du = torch.remainder(a / period, 1.0) - 0.5
    dv = torch.remainder(b / period, 1.0) - 0.5
    return _textured_patch(u, v, du**2 + dv**2 <= 0.3**2)


def _crescent(u, v, a, b, period):
    return (u**2 + v**2 <= 1.0) & ((u - 0.55) ** 2 + v**2 > 0.8**2)


# name -> (mask, base rotation, rotation jitter). A plus rotated by 45 degrees is the cross,
# so those two only jitter around their own base angle; the others rotate freely where that
# keeps the class (stripes stay near horizontal or vertical).
SHAPES: dict[str, tuple[ShapeMask, float, float]] = {
    "disk": (_disk, 0.0, math.pi),
    "ring": (_ring, 0.0, math.pi),
    "square": (_square, 0.0, math.pi),
    "triangle": (_triangle, 0.0, math.pi),
    "plus": (_plus, 0.0, math.pi / 12),
    "cross": (_plus, math.pi / 4, math.pi / 12),
    "horizontal_stripes": (_horizontal_stripes, 0.0, math.pi / 18),
    "vertical_stripes": (_vertical_stripes, 0.0, math.pi / 18),
    "checkerboard": (_checkerboard, 0.0, math.pi),
    "dots": (_dots, 0.0, math.pi),
    "frame": (_frame, 0.0, math.pi),
    "crescent": (_crescent, 0.0, math.pi),
}


def _draw_parameters(labels: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """All per-image random choices (everything but the pixel noise), drawn up front."""
    count = len(labels)

    def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator)

    base_angles = torch.tensor([base for _, base, _ in SHAPES.values()])
    jitters = torch.tensor([jitter for _, _, jitter in SHAPES.values()])
    radius = uniform(count, low=0.65, high=0.95)
    max_offset = (1.0 - 0.8 * radius).clamp(min=0.0)
    return {
        "radius": radius,
        "center": uniform(count, 2, low=-1.0, high=1.0) * max_offset[:, None],
        "angle": base_angles[labels] + jitters[labels] * uniform(count, low=-1.0, high=1.0),
        "period": uniform(count, low=0.3, high=0.5),
        "background": uniform(count, 3),
        "foreground": _contrasting_colours(uniform(count, 3), generator),
    }


def _contrasting_colours(background: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Foreground colours whose luma differs enough from the background's."""
    foreground = torch.rand(background.shape, generator=generator)
    while True:
        too_close = (_luma(foreground) - _luma(background)).abs() < _MIN_LUMA_CONTRAST
        if not too_close.any():
            return foreground
        foreground[too_close] = torch.rand(int(too_close.sum()), 3, generator=generator)


def _luma(colours: torch.Tensor) -> torch.Tensor:
    return colours @ torch.tensor([0.299, 0.587, 0.114])


def _render(
    labels: torch.Tensor, params: dict[str, torch.Tensor], image_size: int, noise_seed: int
) -> torch.Tensor:
    """Draw one chunk: a flat background, the antialiased shape, pixel noise."""
    canvas = params["background"][:, :, None, None].expand(-1, -1, image_size, image_size)
    fine_x, fine_y = _pixel_grid(image_size * _SUPERSAMPLE)
    fine_mask = _shape_masks(labels, params, fine_x, fine_y).float()
    coverage = F.avg_pool2d(fine_mask[:, None], _SUPERSAMPLE)  # antialiased alpha
    canvas = torch.lerp(canvas, params["foreground"][:, :, None, None], coverage)

    noise_generator = torch.Generator().manual_seed(noise_seed)
    canvas += 0.05 * torch.randn(canvas.shape, generator=noise_generator)
    return canvas.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)


def _pixel_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (x, y), each (size, size), spanning [-1, 1]."""
    axis = (torch.arange(size) + 0.5) / size * 2.0 - 1.0
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return x, y


def _shape_masks(
    labels: torch.Tensor, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Boolean (N, H, W) masks for images grouped by label, each run drawn by its shape."""
    masks = []
    start = 0
    for label, count in zip(*torch.unique_consecutive(labels, return_counts=True), strict=True):
        run = slice(start, start + int(count))
        start += int(count)
        mask_of, _, _ = list(SHAPES.values())[int(label)]
        dx = x - params["center"][run, 0, None, None]
        dy = y - params["center"][run, 1, None, None]
        cos = torch.cos(params["angle"][run])[:, None, None]
        sin = torch.sin(params["angle"][run])[:, None, None]
        a = dx * cos + dy * sin
        b = dy * cos - dx * sin
        radius = params["radius"][run, None, None]
        masks.append(mask_of(a / radius, b / radius, a, b, params["period"][run, None, None]))
    return torch.cat(masks)
