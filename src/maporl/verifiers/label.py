"""The label verifier: the task's ground-truth check, 1.0 for a correct final answer, else 0.0."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from maporl.records import Transcript, answer_grid
from maporl.tasks import Task


class LabelVerifier:
    def __init__(self, task: Task):
        self.task = task

    def score(self, transcripts: Sequence[Transcript]) -> torch.Tensor:
        """Scores shaped (B, N, T): scores[b, i, t] for agent i's answer at turn t of problem b."""
        return answer_grid(
            transcripts, lambda pairs: [float(self.task.is_correct(a.parsed, tr.problem)) for tr, a in pairs]
        )
