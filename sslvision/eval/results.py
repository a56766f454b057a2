"""Result records: one flat mapping per evaluation, kept as CSV rows and printed as JSON lines.

Every evaluator appends its record to a results table that ``sslvision report`` reads with pandas;
every command can print its record as one JSON line for scripts (``--json``).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import math
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd
import torch

from sslvision.errors import DataError, PlotError


def append_result(record: Mapping[str, Any], csv_path: str | Path) -> None:
    """Append ``record`` as one row of the CSV at ``csv_path``, creating the file and its folders.

    Columns new to the table are added, with empty cells in earlier rows; columns the record lacks
    stay empty in its row. Nested values (lists, dicts) are stored as JSON text. The table is
    rewritten through a temporary file and ``os.replace``, so a crash never leaves half a table;
    appends from several processes (a sweep's evaluation jobs) take turns on a lock file beside
    it, so none is lost.
    """
    if not record:
        raise ValueError("a result record needs at least one field")
    row = {key: _csv_cell(value) for key, value in _json_safe_mapping(record).items()}
    path = Path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path.with_name(f".{path.name}.lock")):
        table = pd.DataFrame([row])
        if path.exists() and path.stat().st_size > 0:
            table = pd.concat([read_table(path), table], ignore_index=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            table.to_csv(temporary, index=False)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (released by the kernel if the holder dies;
    Linux emulates it with POSIX locks on NFS, where clusters keep their results)."""
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_results(csv_path: str | Path, *, evaluator: str = "") -> pd.DataFrame:
    """The evaluators' results table at ``csv_path``, only ``evaluator``'s rows when given.

    A missing, empty or unparsable file, a table without an ``evaluator`` column (not written by
    the evaluators) and an evaluator without rows are refused by name, not with a pandas error.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise DataError(f"no results table at {path}; run an evaluator first")
    if path.stat().st_size == 0:
        raise DataError(f"the results table {path} is empty (0 bytes)")
    table = read_table(path)
    if "evaluator" not in table.columns:
        raise PlotError(
            f"{path} is not a results table of sslvision's evaluators: it has no 'evaluator' "
            f"column (its first columns: {', '.join(repr(c) for c in table.columns[:5])})"
        )
    if evaluator:
        found = sorted(table["evaluator"].dropna().astype(str).unique())
        table = table[table["evaluator"] == evaluator]
        if table.empty:
            raise PlotError(
                f"no rows of evaluator '{evaluator}' in {path}; it has: {', '.join(found)}"
            )
    return table


def read_table(path: Path) -> pd.DataFrame:
    """``pd.read_csv`` whose errors (empty, binary, malformed content) name the file, one line."""
    try:
        return pd.read_csv(path)
    except ValueError as error:  # pandas' ParserError and UnicodeDecodeError are ValueErrors
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise DataError(f"cannot read {path} as a CSV table: {reason}") from None


def format_json_record(record: Mapping[str, Any]) -> str:
    """``record`` as one JSON line with sorted keys.

    Paths become strings, tensors and numpy values become Python numbers or lists, datetimes
    become ISO 8601 text, and NaN or infinite floats become ``null`` so strict JSON parsers accept
    the line.

    >>> format_json_record({"top1": torch.tensor(0.5), "checkpoint": Path("run/last.pt")})
    '{"checkpoint": "run/last.pt", "top1": 0.5}'
    """
    return json.dumps(_json_safe_mapping(record), sort_keys=True, allow_nan=False)


def flatten_knn(result: Mapping[int, Mapping[str, float]]) -> dict[str, float]:
    """Flatten the output of :func:`sslvision.eval.knn.knn_classify` into record fields.

    >>> flatten_knn({20: {"top1": 0.5, "top5": 0.75}})
    {'knn_top1_k20': 0.5, 'knn_top5_k20': 0.75}
    """
    return {
        f"knn_{metric}_k{k}": float(value)
        for k, metrics in result.items()
        for metric, value in metrics.items()
    }


def _json_safe_mapping(record: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(key): _json_safe(value, key) for key, value in record.items()}


def _json_safe(value: Any, key: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        return _json_safe(value.tolist(), key)
    if isinstance(value, Mapping):
        return _json_safe_mapping(value)
    if isinstance(value, list | tuple):
        return [_json_safe(item, key) for item in value]
    raise TypeError(
        f"field {key!r} has a value of type {type(value).__name__} that JSON cannot hold"
    )


def _csv_cell(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return value
