#!/usr/bin/env python
"""Pretrain on SLURM: ``python tools/submit_slurm.py CONFIG [key=value ...] --nodes N
--gpus-per-node G [--partition P] [--time MIN] [--sweep K=V1,V2] [--then knn] [--dry-run]``."""

import sys

from sslvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["submit", *sys.argv[1:]]))
