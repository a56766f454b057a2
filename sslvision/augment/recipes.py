"""The published view recipes by name, as lists of :class:`ViewGroup` at a given view size."""

from __future__ import annotations

from collections.abc import Callable

from sslvision.config.views import ViewGroup


def simclr_views(size: int, *, blur: bool = True) -> list[ViewGroup]:
    """SimCLR (Chen et al. 2020, appendix A): two identical-recipe views.

    The paper's CIFAR-10 runs leave out Gaussian blur: pass ``blur=False`` for 32 px data.
    """
    return [ViewGroup(count=2, size=size, blur_p=0.5 if blur else 0.0)]


def byol_views(size: int) -> list[ViewGroup]:
    """BYOL (Grill et al. 2020, appendix B): asymmetric views, blur always on the first,
    solarize only on the second, milder colour jitter than SimCLR."""
    common = dict(
        count=1,
        size=size,
        jitter_p=0.8,
        brightness=0.4,
        contrast=0.4,
        saturation=0.2,
        hue=0.1,
        grayscale_p=0.2,
    )
    return [
        ViewGroup(**common, blur_p=1.0, solarize_p=0.0),
        ViewGroup(**common, blur_p=0.1, solarize_p=0.2),
    ]


def mocov2_views(size: int) -> list[ViewGroup]:
    """MoCo v2 (Chen et al. 2020, "Improved baselines"): larger min crop, milder jitter, blur."""
    return [
        ViewGroup(
            count=2,
            size=size,
            scale=(0.2, 1.0),
            jitter_p=0.8,
            brightness=0.4,
            contrast=0.4,
            saturation=0.4,
            hue=0.1,
            grayscale_p=0.2,
            blur_p=0.5,
        )
    ]


def swav_views(size: int) -> list[ViewGroup]:
    """SwAV's multi-crop (Caron et al. 2020, sec. 3.2 and appendix): 2 global crops of ``size``
    (scale 0.14-1) and 6 local crops at 96/224 of it (scale 0.05-0.14), SimCLR's colour recipe."""
    local_size = max(8, round(size * 96 / 224))
    return [
        ViewGroup(count=2, size=size, scale=(0.14, 1.0)),
        ViewGroup(count=6, size=local_size, scale=(0.05, 0.14), is_global=False),
    ]


RECIPES: dict[str, Callable[[int], list[ViewGroup]]] = {
    "simclr": simclr_views,
    "byol": byol_views,
    "mocov2": mocov2_views,
    "swav": swav_views,
}
