"""Run directories: where a command writes its config, metrics and transcripts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

from maporl.config import Config, dump_yaml
from maporl.errors import UsageError
from maporl.records import Transcript


def new_run_dir(path: str | Path | None, cfg: Config, kind: str) -> Path:
    """Create the output directory (default: out_dir/<run_name>-<kind>-<time>) and save the resolved config in it."""
    out = Path(path) if path else Path(cfg.out_dir) / f"{cfg.run_name}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_yaml(cfg))
    except OSError as e:
        raise UsageError(f"cannot write to {out} ({e.strerror}); pass a writable directory with --out") from None
    return out


def write_transcripts(path: Path, transcripts: Iterable[Transcript]) -> None:
    with path.open("w") as f:
        for tr in transcripts:
            f.write(json.dumps(tr.to_json()) + "\n")


def read_transcripts(path: Path) -> list[Transcript]:
    return [Transcript.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
