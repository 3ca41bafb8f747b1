"""``python -m device`` is the same as ``glimpse``."""

import sys

from device.cli import main

sys.exit(main())
