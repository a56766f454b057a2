"""The errors a user can cause: every one is reported by ``sslvision`` as one line, no traceback.

This module is the bottom layer: it imports nothing from the package, so config, data, engine and
eval can all raise these without importing one another. ``sslvision.cli.main`` exits with
:attr:`UserError.exit_code` (2 for bad input, 3 for a run that diverged).
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input that the user can fix; the message says what and where."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A recipe, override or command-line value that does not fit the schema."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read or does not fit this run."""


class RunDirectoryError(UserError, RuntimeError):
    """A run directory that holds another run's work, or one that another process is writing."""


class AnnotationError(UserError, ValueError):
    """An annotation file that cannot be read as detection data; the message names the file."""


class DataError(UserError, ValueError):
    """A data set that cannot be used as given (layout, classes); the message names the place."""


class PlotError(UserError, ValueError):
    """A plot or table asked for a column, run or file that the data does not have."""


class CorruptImageError(UserError, ValueError):
    """An image file that is missing, empty or cannot be decoded."""

    def __init__(self, path: str | Path, reason: str | None = None) -> None:
        if reason is None:  # re-raised by a DataLoader worker: the message is its traceback
            self.path, self.reason = "", ""
            last_line = str(path).rstrip().splitlines()[-1]
            super().__init__(last_line.split(f"{type(self).__name__}: ", 1)[-1])
            return
        self.path = str(Path(path).absolute())
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


class NonFiniteError(UserError, RuntimeError):
    """The loss or the state became NaN or infinite; the run stopped without saving bad state."""

    exit_code = 3
