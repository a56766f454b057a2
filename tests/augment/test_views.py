"""Views and ViewStack: one box and flip per view, a global count that fits, views as slices."""

from __future__ import annotations

import pytest
import torch

from sslvision.augment.views import Views, ViewStack


def make_views(count: int, global_count: int) -> Views:
    images = ViewStack([torch.zeros(2 * count, 3, 8, 8)], [count])
    boxes = ViewStack([torch.zeros(2 * count, 4)], [count])
    flips = ViewStack([torch.zeros(2 * count, dtype=torch.bool)], [count])
    return Views(images, boxes, flips, global_count)


def test_length_is_the_number_of_views() -> None:
    views = make_views(6, 2)
    assert len(views) == 6 and views.global_count == 2


def test_mismatched_lists_are_refused() -> None:
    with pytest.raises(
        ValueError, match="one box tensor and one flip tensor per view: got 2 images"
    ):
        Views(
            ViewStack.of([torch.zeros(1, 3, 4, 4)] * 2),
            ViewStack.of([torch.zeros(1, 4)]),
            ViewStack.of([torch.zeros(1)] * 2),
            2,
        )


def test_global_count_beyond_the_views_is_refused() -> None:
    with pytest.raises(ValueError, match=r"global_count must be between 0 and .* \(2\), got 3"):
        make_views(2, 3)


def test_stack_views_are_slices_of_their_run() -> None:
    big, small = torch.randn(6, 3, 8, 8), torch.randn(9, 3, 4, 4)
    stack = ViewStack([big, small], [2, 3])
    assert len(stack) == 5 and [tuple(v.shape[:2]) for v in stack] == [(3, 3)] * 5
    assert stack[1].data_ptr() == big[3:].data_ptr() and torch.equal(stack[-1], small[6:])
    leading = stack[:3]
    assert leading.counts == (2, 1) and leading.runs[0] is not big
    assert leading.runs[0].data_ptr() == big.data_ptr() and leading.runs[1].shape[0] == 3
    middle = stack[1:4]
    assert middle.counts == (1, 2) and torch.equal(middle.runs[1], small[:6])
    with pytest.raises(IndexError):
        stack[5]


def test_map_calls_once_per_run_and_of_groups_same_shapes() -> None:
    views = [torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 5)]
    stack = ViewStack.of(views)
    assert stack.counts == (2, 1)
    calls = []
    doubled = stack.map(lambda x: calls.append(x.shape) or x * 2)
    assert calls == [(4, 3), (2, 5)]
    for out, view in zip(doubled, views, strict=True):
        torch.testing.assert_close(out, view * 2)


def test_runs_that_do_not_divide_into_their_views_are_refused() -> None:
    with pytest.raises(ValueError, match="run of 5 rows cannot hold 2 equal views"):
        ViewStack([torch.zeros(5, 3)], [2])
