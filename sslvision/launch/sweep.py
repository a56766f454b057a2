"""Sweeps: ``--sweep key=a,b`` flags expand to their product, one run (and run name) a point."""

from __future__ import annotations

import itertools
import re

from sslvision.errors import ConfigError


def sweep_points(sweeps: list[str]) -> list[dict[str, str]]:
    """The product of ``key=v1,v2,...`` flags, in the order given; ``[{}]`` without sweeps.

    >>> sweep_points(["optim.base_lr=0.3,0.6", "seed=1"])
    [{'optim.base_lr': '0.3', 'seed': '1'}, {'optim.base_lr': '0.6', 'seed': '1'}]
    """
    axes: dict[str, list[str]] = {}
    for flag in sweeps:
        key, sep, values = flag.partition("=")
        choices = [value.strip() for value in values.split(",")]
        if not sep or not key or not all(choices):
            raise ConfigError(f"--sweep '{flag}': write key=v1,v2 (e.g. optim.base_lr=0.3,0.6)")
        if key in axes:
            raise ConfigError(f"--sweep names {key} twice; give its values in one flag")
        if len(set(choices)) != len(choices):
            raise ConfigError(f"--sweep '{flag}' lists a value twice")
        axes[key] = choices
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def point_name(base: str, point: dict[str, str]) -> str:
    """The run name of a sweep point, from its values: ``simclr-base_lr0.3-temperature0.1``.

    >>> point_name("simclr", {"optim.base_lr": "0.3", "method.temperature": "0.1"})
    'simclr-base_lr0.3-temperature0.1'
    """
    parts = [f"{key.rsplit('.', 1)[-1]}{value}" for key, value in point.items()]
    return re.sub(r"[^A-Za-z0-9._=-]", "_", "-".join([base, *parts]))


def point_overrides(point: dict[str, str]) -> list[str]:
    """The point as config overrides."""
    return [f"{key}={value}" for key, value in point.items()]
