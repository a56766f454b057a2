#!/usr/bin/env python
"""Logistic regression on cached features: ``python tools/logreg_eval.py ENCODER ...``."""

import sys

from sslvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["logreg", *sys.argv[1:]]))
