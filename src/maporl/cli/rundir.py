"""Run directories: where a command writes its config, metrics and transcripts."""

from __future__ import annotations

import time
from pathlib import Path

from maporl.config import Config, save_config


def new_run_dir(path: str | Path | None, cfg: Config, kind: str) -> Path:
    """Create the output directory (default: out_dir/<run_name>-<kind>-<time>) and save the resolved config in it."""
    out = Path(path) if path else Path(cfg.out_dir) / f"{cfg.run_name}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    save_config(out, cfg)
    return out
