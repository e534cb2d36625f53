"""`python -m maporl …` = the `maporl` command (handy where the console script is not on PATH)."""

import sys

from maporl.cli import main

sys.exit(main())
