"""What the augment pipeline hands to a method: the views plus where each one came from."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Views:
    """The augmented views of one batch, in pipeline order (global views first).

    ``boxes`` and ``flips`` let dense methods (DenseCL, PixPro) match locations across views:
    ``boxes[i][n]`` is the crop ``(x1, y1, x2, y2)`` that view ``i`` of sample ``n`` was taken
    from, in source-image pixels with the full image spanning ``(0, 0, W, H)``, and
    ``flips[i][n]`` says whether that crop was mirrored horizontally afterwards. ``labels``
    are the dataset's labels of the batch, set by the engine, for the supervised losses (SupCon);
    self-supervised methods never read them.
    """

    images: list[Tensor]  # each (N, 3, s, s) float32, normalised; s may differ between groups
    boxes: list[Tensor]  # each (N, 4) float32
    flips: list[Tensor]  # each (N,) bool
    global_count: int  # the first ``global_count`` views are global crops, the rest local
    labels: Tensor | None = None  # (N,) int64

    def __post_init__(self) -> None:
        if not len(self.images) == len(self.boxes) == len(self.flips):
            raise ValueError(
                f"Views needs one box tensor and one flip tensor per view: got "
                f"{len(self.images)} images, {len(self.boxes)} boxes, {len(self.flips)} flips"
            )
        if not 0 <= self.global_count <= len(self.images):
            raise ValueError(
                f"Views.global_count must be between 0 and the number of views "
                f"({len(self.images)}), got {self.global_count}"
            )

    def __len__(self) -> int:
        return len(self.images)
