"""Fault injection for the crash-and-resume tests: `MAPORL_KILL_AT=point:step` SIGKILLs this process there.

Points: `generation` (between the discussion's turns), `update` (after backward, before the optimizer step),
`checkpoint` (half-way through writing a checkpoint). With backend=ray the first two run in the rollout worker and
learner actors, so it is an actor that dies. `MAPORL_KILL_ONCE=PATH`: only the first process to get there dies (it
creates PATH first), so a restarted actor lives. Unset (always, outside tests) this costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

step = 0  # the training step in progress, set by the trainer (and by the Ray actors for theirs)


def point(name: str) -> None:
    if os.environ.get("MAPORL_KILL_AT") == f"{name}:{step}":
        once = os.environ.get("MAPORL_KILL_ONCE")
        if once:
            try:
                Path(once).touch(exist_ok=False)
            except FileExistsError:
                return
        os.kill(os.getpid(), signal.SIGKILL)
