#!/usr/bin/env python
"""Few-shot kNN and logistic regression: ``python tools/few_shot.py ENCODER ...``."""

import sys

from sslvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["fewshot", *sys.argv[1:]]))
