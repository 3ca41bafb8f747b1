"""``python -m provisioning`` is the same as ``glimpse-provision``."""

import sys

from provisioning.cli import main

sys.exit(main())
