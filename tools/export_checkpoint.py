#!/usr/bin/env python
"""Export a checkpoint's backbone: ``python tools/export_checkpoint.py CHECKPOINT [--out FILE]``."""

import sys

from sslvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
