"""What the augment pipeline hands to a method: the views plus where each one came from.

Views stay batched: same-size views live stacked in one tensor (:class:`ViewStack`), and a single
view is a slice of it, never a copy. A method forwards a whole stack at once with
:meth:`ViewStack.map`, which gives BatchNorm the views together as the reference implementations
do and costs no concatenation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import overload

import torch
from torch import Tensor


class ViewStack(Sequence[Tensor]):
    """A sequence of per-view tensors kept as one tensor per run of same-shape views.

    Rows are view-major: run ``r`` with ``counts[r]`` views of ``N`` samples holds its view ``k``
    in rows ``[k*N, (k+1)*N)``. Indexing gives a view's rows (a slice, no copy); slicing gives
    the stack of those views, still one tensor per run.

    >>> stack = ViewStack([torch.zeros(4, 3, 8, 8), torch.zeros(6, 3, 4, 4)], [2, 3])
    >>> len(stack), tuple(stack[1].shape), len(stack[:2].runs)
    (5, (2, 3, 8, 8), 1)
    """

    def __init__(self, runs: Sequence[Tensor], counts: Sequence[int]) -> None:
        if len(runs) != len(counts):
            raise ValueError(f"ViewStack needs one count per run: {len(runs)} runs, {counts}")
        for run, count in zip(runs, counts, strict=True):
            if count < 1 or run.shape[0] % count:
                raise ValueError(
                    f"a ViewStack run of {run.shape[0]} rows cannot hold {count} equal views"
                )
        self.runs, self.counts = tuple(runs), tuple(counts)

    @classmethod
    def of(cls, tensors: Sequence[Tensor]) -> ViewStack:
        """Stack separate per-view tensors, one concatenation per run of same-shape views."""
        runs: list[Tensor] = []
        counts: list[int] = []
        for _, run in groupby(tensors, key=lambda x: x.shape):
            run = list(run)
            runs.append(torch.cat(run) if len(run) > 1 else run[0])
            counts.append(len(run))
        return cls(runs, counts)

    def map(self, fn: Callable[[Tensor], Tensor]) -> ViewStack:
        """``fn`` applied to every run in one call: per-sample outputs stacked like the input."""
        return ViewStack([fn(run) for run in self.runs], self.counts)

    def __len__(self) -> int:
        return sum(self.counts)

    def __iter__(self) -> Iterator[Tensor]:
        for run, count in zip(self.runs, self.counts, strict=True):
            yield from run.chunk(count)

    @overload
    def __getitem__(self, index: int) -> Tensor: ...

    @overload
    def __getitem__(self, index: slice) -> ViewStack: ...

    def __getitem__(self, index: int | slice) -> Tensor | ViewStack:
        if isinstance(index, slice):
            return self._views(*index.indices(len(self)))
        position = range(len(self))[index]  # IndexError and negative indices as for lists
        return self._views(position, position + 1, 1).runs[0]

    def _views(self, start: int, stop: int, step: int) -> ViewStack:
        """Views ``start`` to ``stop``: the rows they occupy in each run, as slices."""
        if step != 1:
            raise ValueError(f"a ViewStack slices consecutive views only, got step {step}")
        runs: list[Tensor] = []
        counts: list[int] = []
        first = 0
        for run, count in zip(self.runs, self.counts, strict=True):
            lo, hi = max(start, first) - first, min(stop, first + count) - first
            if lo < hi:
                rows = run.shape[0] // count
                runs.append(run[lo * rows : hi * rows])
                counts.append(hi - lo)
            first += count
        return ViewStack(runs, counts)


@dataclass(frozen=True)
class Views:
    """The augmented views of one batch, in pipeline order (global views first).

    ``boxes`` and ``flips`` let dense methods (DenseCL, PixPro) match locations across views:
    ``boxes[i][n]`` is the crop ``(x1, y1, x2, y2)`` that view ``i`` of sample ``n`` was taken
    from, in source-image pixels with the full image spanning ``(0, 0, W, H)``, and
    ``flips[i][n]`` says whether that crop was mirrored horizontally afterwards. ``labels``
    are the dataset's labels of the batch, handed to the pipeline with the images, for the
    supervised losses (SupCon); self-supervised methods never read them.
    """

    images: ViewStack  # each view (N, 3, s, s) float32, normalised; s may differ between runs
    boxes: ViewStack  # each view (N, 4) float32
    flips: ViewStack  # each view (N,) bool
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
