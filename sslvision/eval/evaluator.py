"""What an evaluator declares once: its command line and the prefix of its metric columns.

Each evaluator is a job module (``knn_eval``, ``detection``) plus one subclass of
:class:`Evaluator` in ``sslvision/eval/commands/``, registered in
:data:`sslvision.registry.EVALUATORS` under its command's name. ``sslvision.cli`` adds a command
per registered evaluator and ``report`` and the plots find the metric columns by the declared
prefixes, so a new evaluator touches neither. This module and the commands import no torch, so
``sslvision --help`` stays quick; the job is imported when the command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any, ClassVar

from sslvision.registry import EVALUATORS


class Evaluator:
    """Base of the registered evaluators; subclasses set the class attributes and both hooks."""

    help: ClassVar[str]  # one line in ``sslvision --help``
    description: ClassVar[str]  # the command's own ``--help``
    # Result columns that start with it (or with one of them) are this evaluator's metrics.
    metric_prefix: ClassVar[str | tuple[str, ...]]

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add the evaluator's own flags; the CLI adds those every evaluator shares."""
        raise NotImplementedError

    @staticmethod
    def run(args: argparse.Namespace) -> dict[str, Any]:
        """Evaluate as ``args`` says, print a summary and return the result record."""
        raise NotImplementedError


def metric_columns(columns: Iterable[str]) -> list[str]:
    """The columns of a results table that hold some registered evaluator's metric.

    >>> metric_columns(["encoder", "knn_top1_k20", "knn_top5_k20", "ap50", "seconds"])
    ['knn_top1_k20', 'ap50']
    """
    prefixes: list[str] = []
    for name in EVALUATORS.names():
        declared = EVALUATORS.get(name).metric_prefix
        prefixes += [declared] if isinstance(declared, str) else list(declared)
    return [column for column in columns if column.startswith(tuple(prefixes))]
