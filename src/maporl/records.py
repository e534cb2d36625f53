"""Typed, frozen records passed between stages (text only: tensors appear from the verifier on)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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
    response: str  # raw generated text
    parsed: str | None  # final answer extracted by the task's safe parser (None: no parseable answer)
    truncated: bool = False  # cut off at generation.max_new_tokens before the end-of-turn token


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
        answers = tuple(tuple(Answer(**{**a, "prompt": tuple(a["prompt"])}) for a in turn) for turn in d["answers"])
        return Transcript(problem=Problem(**d["problem"]), answers=answers, meta=d.get("meta", {}))
