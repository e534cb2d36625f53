"""Typed, frozen records passed between stages: text (problems, answers, transcripts), then tensors (episodes).

Tensor shapes: B discussions, N agents, T turns; E episodes (one agent's answer at one turn), L tokens.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from maporl.errors import UsageError


@dataclass(frozen=True)
class Problem:
    """One question with its ground truth."""

    id: str  # stable across runs: a hash of the question text
    question: str
    answer: str  # normalised ground-truth answer, compared with Task.is_correct
    family: str  # task name that produced it
    solution: str | None = None  # a worked solution, when the task can write one (used for SFT of the base)


@dataclass(frozen=True)
class Answer:
    """What one agent said at one turn."""

    agent: int
    turn: int
    prompt: tuple[dict[str, str], ...]  # chat messages the agent saw
    response: str  # generated text (for reading and parsing; the update trains on token_ids)
    parsed: str | None  # final answer extracted by the task's safe parser (None: no parseable answer)
    truncated: bool = False  # cut off at generation.max_new_tokens before the end-of-turn token
    token_ids: tuple[int, ...] = ()  # the sampled tokens, end-of-turn included when sampled: what is trained on
    logprobs: tuple[float, ...] = ()  # the sampler's log-probability of each (at the sampling temperature)


@dataclass(frozen=True)
class Transcript:
    """A whole discussion of one problem: answers[t][i] is agent i at turn t."""

    problem: Problem
    answers: tuple[tuple[Answer, ...], ...]
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def num_turns(self) -> int:
        return len(self.answers)

    @property
    def num_agents(self) -> int:
        return len(self.answers[0]) if self.answers else 0

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> Transcript:
        tuples = ("prompt", "token_ids", "logprobs")  # JSON has lists
        answers = tuple(
            tuple(Answer(**{**a, **{k: tuple(a[k]) for k in tuples}}) for a in turn) for turn in d["answers"]
        )
        return Transcript(problem=Problem(**d["problem"]), answers=answers, meta=d.get("meta", {}))


def answer_grid(
    transcripts: Sequence[Transcript], values: Callable[[list[tuple[Transcript, Answer]]], Sequence[float]]
) -> torch.Tensor:
    """A (B, N, T) float tensor with one value per answer: [b, i, t] is agent i's answer at turn t of discussion b.

    `values` receives every (transcript, answer) pair at once, ordered by (b, i, t), so a batched scorer (a
    learned verifier) makes one call; it returns one value per pair.
    """
    if not transcripts:
        return torch.zeros(0, 0, 0)
    n, t = transcripts[0].num_agents, transcripts[0].num_turns
    pairs = [(tr, tr.answers[k][i]) for tr in transcripts for i in range(n) for k in range(t)]
    return torch.tensor(list(values(pairs)), dtype=torch.float).reshape(len(transcripts), n, t)


@dataclass(frozen=True)
class AgentSlot:
    """Where an agent's policy lives: a model key of its team and the peft adapter to activate (None: bare model)."""

    model_key: str
    adapter: str | None = None


@dataclass(frozen=True)
class EpisodeBatch:
    """Tokenised episodes, left-padded: the prompt an agent saw, then the tokens it sampled."""

    input_ids: torch.Tensor  # (E, L) long
    attention_mask: torch.Tensor  # (E, L) long
    answer_mask: torch.Tensor  # (E, L-1) bool: position p scores token p+1, True where that token is the answer's
    agent: torch.Tensor  # (E,) long
    turn: torch.Tensor  # (E,) long
    problem: torch.Tensor  # (E,) long, index of the episode's discussion among the step's transcripts

    def to(self, device) -> EpisodeBatch:
        return EpisodeBatch(*(x.to(device) for x in dataclasses.astuple(self)))

    def rows(self, index: torch.Tensor) -> EpisodeBatch:
        """A sub-batch, trimmed of leading columns that are padding in every selected row."""
        mask = self.attention_mask[index]
        first = int(mask.any(0).nonzero()[0]) if mask.any() else 0
        return EpisodeBatch(
            self.input_ids[index, first:],
            mask[:, first:],
            self.answer_mask[index, first:],
            self.agent[index],
            self.turn[index],
            self.problem[index],
        )


@dataclass(frozen=True)
class TrainBatch:
    """What one update trains on: the episodes and, per scored position, the targets computed before the update."""

    episodes: EpisodeBatch
    advantages: torch.Tensor  # (E, L-1)
    returns: torch.Tensor | None  # (E, L-1) value targets (PPO); None without value heads
    old_logprobs: torch.Tensor | None  # (E, L-1) log π_old; None: one on-policy pass, the current ones detached
    old_values: torch.Tensor | None  # (E, L-1) V_old (PPO)
    ref_logprobs: torch.Tensor | None  # (E, L-1) log π_ref (algo.kl_coef > 0)

    def _targets(self) -> list[torch.Tensor | None]:
        return [getattr(self, f.name) for f in dataclasses.fields(self)[1:]]

    def to(self, device) -> TrainBatch:
        return TrainBatch(self.episodes.to(device), *(None if x is None else x.to(device) for x in self._targets()))

    def rows(self, index: torch.Tensor) -> TrainBatch:
        """A sub-batch: its episodes trimmed of all-padding columns, every (E, L-1) tensor cut to the same width."""
        episodes = self.episodes.rows(index)
        width = episodes.answer_mask.shape[1]  # right-aligned: the trimmed columns are the leading ones
        cut = [None if x is None else x[index, x.shape[1] - width :] for x in self._targets()]
        return TrainBatch(episodes, *cut)


def write_transcripts(path: Path, transcripts: Iterable[Transcript]) -> None:
    """One JSON object per line: what `maporl eval`, training and `discuss` write and the report reads back."""
    with path.open("w") as f:
        for tr in transcripts:
            f.write(json.dumps(tr.to_json()) + "\n")


def read_transcripts(path: Path) -> list[Transcript]:
    """What `write_transcripts` wrote; a file in another format is a one-line error naming it."""
    try:
        return [Transcript.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{path} is not a transcripts file this version of maporl reads ({e!r})") from None
