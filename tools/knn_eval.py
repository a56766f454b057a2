#!/usr/bin/env python
"""kNN-evaluate an encoder: ``python tools/knn_eval.py ENCODER --train-data D --val-data D``."""

import sys

from sslvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["knn", *sys.argv[1:]]))
