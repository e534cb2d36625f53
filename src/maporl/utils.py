"""Small shared helpers: progress bars that stay quiet off a TTY, the linear learning-rate schedule, seeding."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class _Bar:
    def __init__(self, total: int, description: str, quiet: bool):
        self.total, self.description, self.done = total, description, 0
        self._rich = None
        self._last_print = time.time()
        self._start = time.time()
        self._quiet = quiet
        if not quiet and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                transient=False,
            )
            self._task = self._rich.add_task(description, total=total, status="")

    def advance(self, status: str = "", n: int = 1) -> None:
        self.done += n
        if self._rich is not None:
            self._rich.update(self._task, advance=n, status=status)
        elif not self._quiet and (time.time() - self._last_print > 30 or self.done == self.total):
            # Off a TTY (CI, logs) a line every 30 s instead of a redrawn bar.
            elapsed = time.time() - self._start
            print(
                f"{self.description}: {self.done}/{self.total} {status} [{elapsed:.0f}s]", file=sys.stderr, flush=True
            )
            self._last_print = time.time()

    def note(self, line: str) -> None:
        """A line that stays (above the bar on a TTY)."""
        if self._rich is not None:
            self._rich.console.print(line)
        elif not self._quiet:
            print(f"{self.description}: {line}", file=sys.stderr, flush=True)


@contextmanager
def progress(total: int, description: str, quiet: bool = False) -> Iterator[_Bar]:
    bar = _Bar(total, description, quiet)
    if bar._rich is not None:
        with bar._rich:
            yield bar
    else:
        yield bar


def lr_factor(update: int, total_updates: int, final_ratio: float) -> float:
    """The learning-rate multiplier after `update` optimizer steps: linear from 1 to `final_ratio` at
    `total_updates`, then constant."""
    return 1.0 - (1.0 - final_ratio) * min(1.0, update / max(1, total_updates))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (LoRA initialisation and minibatch order draw from them)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
