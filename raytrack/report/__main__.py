"""python -m raytrack.report (see :mod:`raytrack.report.cli`)."""

import sys

from raytrack.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
