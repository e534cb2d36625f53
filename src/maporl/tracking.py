"""Metric tracking the way TRL users expect (`train.report_to`).

Every row goes to RUN_DIR/metrics.jsonl (always on: `maporl report` and `--resume` read it back), and to TensorBoard
and Weights & Biases when asked. Their imports happen only when asked for: each pulls in a large dependency tree, and
W&B starts a service process.
"""

from __future__ import annotations

import json
import numbers
import os
import secrets
import string
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from maporl.errors import UsageError, did_you_mean

REPORTERS = ("jsonl", "tensorboard", "wandb")
WANDB_ID_FILE = "wandb_run_id.txt"


def _not_installed(name: str, what: str) -> UsageError:
    return UsageError(
        f"train.report_to has '{name}' but {what} is not installed: "
        f"`pip install 'maporl[{name}]'` (or drop it from train.report_to)"
    )


def _scalars(row: dict[str, Any]) -> dict[str, float | int]:
    # Bools are flags rather than curves, and strings (names, paths) have no place on a chart: both stay jsonl-only.
    return {k: v for k, v in row.items() if k != "step" and isinstance(v, numbers.Real) and not isinstance(v, bool)}


class Tracker:
    """Every metric row goes to RUN_DIR/metrics.jsonl, and to TensorBoard / W&B when asked.

    Args:
        run_dir: The run directory; TensorBoard writes to run_dir/tensorboard and W&B to run_dir/wandb.
        report_to: Backends from `REPORTERS`; "jsonl" is on whether listed or not.
        config: The resolved run config, stored with the W&B run.
        run_name: The W&B run's display name.
        resume_step: None for a fresh run; for `--resume`, the step of the checkpoint the run continues from (the
            caller has already cut metrics.jsonl back to it).
    """

    def __init__(
        self,
        run_dir: Path,
        report_to: Sequence[str],
        config: dict[str, Any],
        run_name: str,
        resume_step: int | None = None,
    ) -> None:
        for name in report_to:
            if name not in REPORTERS:
                raise UsageError(
                    f"train.report_to has unknown backend '{name}'{did_you_mean(name, REPORTERS)}; "
                    f"valid: {', '.join(REPORTERS)}"
                )
        run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = (run_dir / "metrics.jsonl").open("a")
        self._tensorboard: Any = None
        self._wandb: Any = None
        self._wandb_first_step = 0
        try:
            if "tensorboard" in report_to:
                self._tensorboard = self._start_tensorboard(run_dir, resume_step)
            if "wandb" in report_to:
                self._wandb = self._start_wandb(run_dir, config, run_name, resume_step)
        except BaseException:
            self.close()
            raise

    def _start_tensorboard(self, run_dir: Path, resume_step: int | None) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise _not_installed("tensorboard", "TensorBoard") from e
        # After a crash past the checkpoint, the steps after it are redone: purge_step makes TensorBoard hide the
        # crashed attempt's events from that step on, so each step shows once, with the values of the attempt that won.
        purge_step = None if resume_step is None else resume_step + 1
        return SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge_step)

    def _start_wandb(self, run_dir: Path, config: dict[str, Any], run_name: str, resume_step: int | None) -> Any:
        try:
            import wandb
        except ImportError as e:
            raise _not_installed("wandb", "W&B") from e
        id_file = run_dir / WANDB_ID_FILE
        # The id is saved so that `--resume` continues the same W&B run; a fresh run (even in a reused directory)
        # always starts a new one rather than appending to a run it did not make.
        run_id = id_file.read_text().strip() if resume_step is not None and id_file.is_file() else ""
        if not run_id:
            run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
            id_file.write_text(run_id + "\n")
        run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "maporl"),
            name=run_name,
            dir=str(run_dir),
            config=config,
            id=run_id,
            resume="allow",
            allow_val_change=True,  # a resumed run may change e.g. max_steps
            reinit="create_new",  # never hand back, log to or finish a run that the caller's own code started
            # quiet keeps the lines saying where the run is (its URL, or its offline directory) and drops the rest.
            settings=wandb.Settings(console="off", quiet=True),
        )
        if resume_step is not None:
            # Online, a resumed run's next step is one past the last step the server has. Rows below it are steps
            # the crashed attempt logged with the same values (resume is bit-exact), which W&B would drop with a
            # warning each: skip them. Offline, W&B cannot know (it says 0): the new offline-run directory
            # gets the redone steps again, with the same values.
            self._wandb_first_step = run.step
        return run

    def log(self, row: dict[str, Any]) -> None:
        """Write one row: `row["step"]` is its int step; every other numeric value is a scalar at that step."""
        # One flushed line per row, so a killed run keeps every row it wrote.
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        step = int(row["step"])
        scalars = _scalars(row)
        if self._tensorboard is not None:
            for key, value in scalars.items():
                self._tensorboard.add_scalar(key, value, step)
        if self._wandb is not None and step >= self._wandb_first_step:
            self._wandb.log(scalars, step=step)

    def close(self, exit_code: int = 0) -> None:
        """Flush and close every backend; a non-zero `exit_code` marks the W&B run as failed. Safe to call twice."""
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._wandb is not None:
            self._wandb.finish(exit_code=exit_code)
            self._wandb = None
        self._jsonl.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(exit_code=0 if exc_type is None else 1)
