"""One group of views that share a recipe: the unit a config lists to describe (multi-)crop."""

from __future__ import annotations

from dataclasses import dataclass, fields

from sslvision.errors import ConfigError


class FieldError(ConfigError):
    """An impossible value of one ``ViewGroup`` field.

    It keeps the field apart from the problem, so that the config layer, which knows where the
    group sits in a recipe, can name the whole key (``augment.views.0.blur_p``).
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"ViewGroup.{field} {problem}")
        self.field = field
        self.problem = problem


def _check_range(name: str, value: tuple[float, float], low: float, high: float | None) -> None:
    """A ``(lo, hi)`` pair with ``low < lo <= hi`` (and ``hi <= high`` when given)."""
    ok = len(value) == 2 and low < value[0] <= value[1] and (high is None or value[1] <= high)
    if not ok:
        upper = "" if high is None else f" <= {high}"
        raise FieldError(name, f"must be (lo, hi) with {low} < lo <= hi{upper}, got {value!r}")


@dataclass
class ViewGroup:
    """``count`` views drawn with the same recipe; the defaults are SimCLR's ImageNet recipe.

    Chen et al. 2020 (SimCLR), appendix A: random resized crop (scale 0.08-1, ratio 3/4-4/3),
    horizontal flip, colour jitter 0.8/0.8/0.8/0.2 applied with p=0.8, grayscale p=0.2 and
    Gaussian blur (sigma 0.1-2, kernel 10% of the view size) with p=0.5. ``is_global`` marks full
    crops, as opposed to the small local crops of multi-crop (SwAV), which come after them.
    """

    count: int = 2
    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    is_global: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):  # YAML gives lists where the recipe means pairs
            if isinstance(getattr(self, f.name), list):
                setattr(self, f.name, tuple(getattr(self, f.name)))
        if self.count < 1:
            raise FieldError("count", f"must be at least 1, got {self.count}")
        if self.size < 1:
            raise FieldError("size", f"must be at least 1 pixel, got {self.size}")
        _check_range("scale", self.scale, 0.0, 1.0)
        _check_range("ratio", self.ratio, 0.0, None)
        _check_range("blur_sigma", self.blur_sigma, 0.0, None)
        for name in ("hflip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise FieldError(
                    name, f"is a probability and must be in [0, 1], got {getattr(self, name)}"
                )
        for name in ("brightness", "contrast", "saturation"):
            if not getattr(self, name) >= 0.0:
                raise FieldError(name, f"must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise FieldError("hue", f"must be in [0, 0.5], got {self.hue}")

    @property
    def jitter_enabled(self) -> bool:
        """Whether colour jitter can change anything (a zero strength or p is a no-op)."""
        strengths = (self.brightness, self.contrast, self.saturation, self.hue)
        return self.jitter_p > 0.0 and any(s > 0.0 for s in strengths)

    @property
    def blur_kernel_size(self) -> int:
        """10% of the view size, made odd, at least 3 (SimCLR: 23 px for 224 px views)."""
        return max(3, int(0.1 * self.size) | 1)
