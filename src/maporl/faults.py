"""Fault injection for the crash-and-resume tests: `MAPORL_KILL_AT=point:step` SIGKILLs this process there.

Points: `generation` (between the discussion's turns), `update` (after backward, before the optimizer step),
`checkpoint` (half-way through writing a checkpoint). Unset (always, outside tests) this costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

step = 0  # the training step in progress, set by the trainer


def point(name: str) -> None:
    if os.environ.get("MAPORL_KILL_AT") == f"{name}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
