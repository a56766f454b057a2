#!/usr/bin/env python
"""Build an ImageNet subset tree: ``python tools/make_imagenet_subset.py --imagenet-root DIR
--classes imagenet100|imagenette|FILE --out DIR [--link|--copy] [--per-class N] [--size S]``.

The work is done by :mod:`sslvision.data.imagenet_subset`; ``--help`` lists every flag.
"""

import sys

from sslvision.data.imagenet_subset import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
