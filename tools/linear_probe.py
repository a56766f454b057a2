#!/usr/bin/env python
"""Linear-probe an encoder: ``python tools/linear_probe.py ENCODER --train-data D --val-data D``."""

import sys

from sslvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["linear", *sys.argv[1:]]))
