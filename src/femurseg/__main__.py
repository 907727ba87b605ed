"""``python -m femurseg`` is ``femurseg``."""

import sys

from femurseg.cli.main import main

sys.exit(main())
