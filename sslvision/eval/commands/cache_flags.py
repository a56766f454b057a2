"""``--cache-dir`` and ``--no-cache``: where evaluators keep extracted features (``FeatureStore``).

By default the cache is the folder ``feature_cache`` beside the results table, so rerunning an
evaluator, or another one on the same encoder and images, skips the extraction.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CACHE_FOLDER = "feature_cache"


def add_cache_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--cache-dir`` and ``--no-cache`` to an evaluator's command line."""
    parser.add_argument(
        "--cache-dir",
        default="",
        help=f"where extracted features are kept and reused; empty: {CACHE_FOLDER}/ beside "
        "--results-csv",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="extract the features afresh and keep none (overrides --cache-dir)",
    )


def cache_dir_of(args: argparse.Namespace) -> Path | None:
    """The feature cache folder the parsed ``args`` ask for; None with ``--no-cache``.

    Read at run time: the CLI adds ``--results-csv`` after the evaluator's own flags.
    """
    if args.no_cache:
        return None
    if args.cache_dir:
        return Path(args.cache_dir)
    return Path(args.results_csv).parent / CACHE_FOLDER
