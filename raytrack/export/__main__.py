"""``python -m raytrack.export``: see :mod:`raytrack.export.cli`."""

from raytrack.export.cli import main

raise SystemExit(main())
