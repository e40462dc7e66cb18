"""``python -m flowmatch`` (also usable under ``torchrun -m flowmatch``)."""

import sys

from flowmatch.cli.main import main

sys.exit(main())
