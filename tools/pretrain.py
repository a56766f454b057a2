#!/usr/bin/env python
"""Pretrain a backbone: ``python tools/pretrain.py CONFIG [key=value ...] [--resume auto]``."""

import sys

from sslvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
