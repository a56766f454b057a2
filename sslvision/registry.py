"""Named choices that find their members: a decorator registers a member where it is defined.

A :class:`Registry` knows the home of its members (a package or a single module) by name only.
The first time a name is asked for, it imports every module of that home (``pkgutil``, as timm's
``_registry`` does), so each member's decorator runs and no second list of names exists. Because
the home is a string, a low layer such as :mod:`sslvision.config` can ask for a method's config
schema or check a dataset's name without importing the packages that define them: the import
happens when a name is looked up, never when the asking module is imported.

This module is the bottom layer beside :mod:`sslvision.errors`: it imports nothing heavy and
defines the project's registries, each with the config key it names in its error message.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sslvision.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Members by name, in registration order; ``key`` is the setting that selects one.

    >>> colours = Registry("paint.colour", home="sslvision.errors")
    >>> @colours.register("red")
    ... def red() -> str:
    ...     return "#f00"
    >>> colours.get("red")()
    '#f00'
    >>> colours.get("blue")
    Traceback (most recent call last):
    ...
    sslvision.errors.ConfigError: unknown paint.colour 'blue'. Valid choices: red.
    """

    def __init__(self, key: str, home: str) -> None:
        self.key = key
        self.home = home
        self._members: dict[str, T] = {}
        self._found = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that makes ``member`` the choice ``name``; a name is taken only once."""

        def add(member: T) -> T:
            taken = self._members.get(name)
            if taken is not None and _origin(taken) != _origin(member):
                raise ValueError(f"{self.key} '{name}' is registered twice: {_origin(taken)}")
            self._members[name] = member
            return member

        return add

    def names(self) -> list[str]:
        """Every member's name, in registration order, after importing the home's modules."""
        self._find_members()
        return list(self._members)

    def get(self, name: str) -> T:
        """The member ``name``; an unknown name is a :class:`ConfigError` naming the choices."""
        if name not in self._members:
            self._find_members()
        if name not in self._members:
            raise ConfigError(
                f"unknown {self.key} '{name}'. Valid choices: {', '.join(self._members)}."
            )
        return self._members[name]

    def _find_members(self) -> None:
        """Import the home and, for a package, each module in it, so their decorators run."""
        if self._found:
            return
        home = importlib.import_module(self.home)
        for module in pkgutil.iter_modules(getattr(home, "__path__", []), f"{self.home}."):
            importlib.import_module(module.name)
        self._found = True


def _origin(member: Any) -> str:
    """Where ``member`` was defined; a module imported twice registers the same origin again."""
    return f"{getattr(member, '__module__', '?')}.{getattr(member, '__qualname__', repr(member))}"


# The project's registries. Each home is named, not imported, so that this module stays light; the
# members' types (Method, Dataset factories, ...) live in higher layers, hence Any.
METHODS: Registry[Any] = Registry("method.name", home="sslvision.methods")
METHOD_CONFIGS: Registry[Any] = Registry("method.name", home="sslvision.methods")
PAIR_LOSSES: Registry[Any] = Registry("method.loss", home="sslvision.methods.pair_losses")
DATASETS: Registry[Any] = Registry("data.dataset", home="sslvision.data")
OPTIMIZERS: Registry[Any] = Registry("optim.name", home="sslvision.engine.optim")
EVALUATORS: Registry[Any] = Registry("evaluator", home="sslvision.eval.commands")
# Probes the engine's monitors call during training (the evaluators build them: eval > engine).
PROBES: Registry[Any] = Registry("monitor probe", home="sslvision.eval")
