"""The label verifier: the task's ground-truth check, 1.0 for a correct final answer, else 0.0."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from maporl.records import Transcript
from maporl.tasks import Task


class LabelVerifier:
    def __init__(self, task: Task):
        self.task = task

    def score(self, transcripts: Sequence[Transcript]) -> torch.Tensor:
        """Scores shaped (B, N, T): scores[b, i, t] for agent i's answer at turn t of problem b."""
        return torch.tensor(
            [
                [
                    [float(self.task.is_correct(tr.answers[t][i].parsed, tr.problem)) for t in range(tr.num_turns)]
                    for i in range(tr.num_agents)
                ]
                for tr in transcripts
            ]
        ).reshape(len(transcripts), transcripts[0].num_agents if transcripts else 0, -1)
