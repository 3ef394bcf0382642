"""``python -m raytrack.bench``."""

import sys

from raytrack.bench import main

sys.exit(main())
