"""python -m raytrack.evaluate (see :mod:`raytrack.evaluate.cli`)."""

import sys

from raytrack.evaluate.cli import main

if __name__ == "__main__":
    sys.exit(main())
