"""`python -m maporl.cli ...` is `maporl ...`."""

import sys

from maporl.cli import main

sys.exit(main())
