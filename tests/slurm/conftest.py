"""A real single-node SLURM cluster for the tests marked ``slurm``, started once a session.

The packages are installed by ``make test-slurm`` (``python tests/slurm/local_cluster.py
install``); without them the tests skip with a message.
"""

from __future__ import annotations

import importlib.util
import os
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _local_cluster() -> types.ModuleType:
    """``local_cluster.py``, loaded by path (the tests folder is no package)."""
    spec = importlib.util.spec_from_file_location("local_cluster", HERE / "local_cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A running cluster (``.env``, ``.partition``, ``.run(...)``); stopped at the end."""
    local_cluster = _local_cluster()
    missing = local_cluster.missing_binaries()
    if missing:
        pytest.skip(
            f"SLURM is not installed ({', '.join(missing)} missing): run "
            "'python tests/slurm/local_cluster.py install' (Debian packages) or 'make test-slurm'"
        )
    cluster = local_cluster.start(tmp_path_factory.mktemp("slurm"))
    saved = {key: os.environ.get(key) for key in cluster.env}
    os.environ.update(cluster.env)  # submitit calls sbatch and sacct with this environment
    try:
        yield cluster
    finally:
        cluster.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
