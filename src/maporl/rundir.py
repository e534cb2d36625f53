"""Run directories: where a command writes its config, metrics and transcripts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

from maporl.config import Config, dump_yaml
from maporl.errors import UsageError
from maporl.records import Transcript


def save_config(run_dir: Path, cfg: Config) -> None:
    """Write the resolved config to run_dir/config.yaml (creating the directory): what `--resume`, `maporl eval
    --checkpoint RUN_DIR` and reports read back."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    except OSError as e:
        raise UsageError(f"cannot write to {run_dir} ({e.strerror}); pass a writable directory with --out") from None


def new_run_dir(path: str | Path | None, cfg: Config, kind: str) -> Path:
    """Create the output directory (default: out_dir/<run_name>-<kind>-<time>) and save the resolved config in it."""
    out = Path(path) if path else Path(cfg.out_dir) / f"{cfg.run_name}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    save_config(out, cfg)
    return out


def write_transcripts(path: Path, transcripts: Iterable[Transcript]) -> None:
    with path.open("w") as f:
        for tr in transcripts:
            f.write(json.dumps(tr.to_json()) + "\n")
