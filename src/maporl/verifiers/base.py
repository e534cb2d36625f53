"""What every learned verifier shares: scoring transcripts from P(correct | question, response), and the position ids
of left-padded rows."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from maporl.records import Transcript, answer_grid
from maporl.tasks import Task


class ProbabilityVerifier:
    """A verifier that scores (question, response) pairs with P(correct); subclasses implement `probabilities`."""

    task: Task | None  # renders the question as the agents saw it; None: the raw question text

    def probabilities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        raise NotImplementedError

    def score(self, transcripts: Sequence[Transcript]) -> torch.Tensor:
        """(B, N, T) scores in [0, 1], every answer of every agent at every turn in one `probabilities` call."""
        render = self.task.render_question if self.task is not None else (lambda p: p.question)
        return answer_grid(
            transcripts, lambda pairs: self.probabilities([(render(tr.problem), a.response) for tr, a in pairs])
        )


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded rows: each row's real tokens count from 0 (the model's default counts the pads)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)
