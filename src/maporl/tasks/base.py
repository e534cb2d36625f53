"""The Task seam: seeded problem sampling, prompt fields, safe answer extraction, correctness.

Model output is never executed: answers are found with anchored regular expressions over a bounded tail of the text
and converted with bounded integer/decimal arithmetic.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from decimal import Context, Decimal, InvalidOperation
from typing import Literal

from maporl.records import Problem

Split = Literal["train", "eval"]

MAX_DIGITS = 30  # longer numbers are treated as unparseable: no huge-int arithmetic on model output
_TAIL_CHARS = 4096  # the final answer sits at the end; scanning a bounded tail keeps parsing O(1) on huge outputs
_NUM = r"(-?\$?\d[\d,]*(?:\.\d+)?)"
# A final answer is a number, not the start of an expression: "The answer is 16-14." does not parse. A lenient
# parse (16) let RL drift into trailing junk that earned full reward until the junk ate the answer (seen in a
# 3,000-step single-agent GRPO run: "The answer is 42-48." for 150 steps, then "The answer is 4" for "47").
_END = r"(?![\d,]|\.\d|\s*[-+*/x×÷^=]\s*\$?\d)"
_ANSWER_PATTERNS = (
    re.compile(r"answer is\s*:?\s*" + _NUM + _END, re.IGNORECASE),
    re.compile(r"####\s*" + _NUM + _END),
    re.compile(r"\\boxed\{\s*" + _NUM + r"\s*\}"),
)
_LABEL_RE = re.compile(r"answer is\s*:?\s*[*\"'`]*([A-Za-z]+)", re.IGNORECASE)
EVAL_FRACTION_PER_1000 = 200  # 20% of the problem space is held out for evaluation


def split_of(question: str) -> Split:
    """Which split a problem belongs to, decided by a hash of its text: train and eval are disjoint by construction."""
    h = int.from_bytes(hashlib.sha256(question.encode("utf-8")).digest()[:4], "big")
    return "eval" if h % 1000 < EVAL_FRACTION_PER_1000 else "train"


def problem_id(question: str) -> str:
    return hashlib.sha256(question.encode("utf-8")).hexdigest()[:12]


def normalize_number(text: str) -> str | None:
    """'1,234' -> '1234', '$5' -> '5', '3.50' -> '3.5', '7.0' -> '7'; None when not a bounded number."""
    t = text.strip().replace(",", "").replace("$", "").rstrip(".")
    if not t or sum(c.isdigit() for c in t) > MAX_DIGITS:
        return None
    try:
        d = Decimal(t)
    except InvalidOperation:
        return None
    # Bound the magnitude too: '1e99999999' has few digits but would be a huge integer.
    if not d.is_finite() or not -MAX_DIGITS <= d.adjusted() < MAX_DIGITS:
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(Context(prec=MAX_DIGITS)), "f")


def extract_number_answer(text: str) -> str | None:
    """The last 'The answer is N' (or '#### N', '\\boxed{N}') in the text, normalised; None when absent.

    Deliberately no 'last number in the text' fallback: an answer without the final-answer phrase counts as
    unparseable, so the validity penalty can see it.
    """
    tail = text[-_TAIL_CHARS:]
    for pattern in _ANSWER_PATTERNS:
        matches = pattern.findall(tail)
        if matches:
            return normalize_number(matches[-1])
    return None


def last_answer_word(text: str) -> str | None:
    """The word after the last 'The answer is' in the text, lower-cased (quotes and bold marks skipped); None if
    there is none."""
    matches = _LABEL_RE.findall(text[-_TAIL_CHARS:])
    return matches[-1].lower() if matches else None


def extract_label_answer(text: str, labels: tuple[str, ...]) -> str | None:
    """The label after the last 'The answer is' in the text (case-insensitive), if it is one of `labels`."""
    word = last_answer_word(text)
    return word if word in labels else None


ANLI_LABELS = ("entailment", "neutral", "contradiction")  # index = the Hugging Face facebook/anli label id
NUMERIC_INSTRUCTION = "Solve it step by step, then end with 'The answer is N' where N is a number."


class Task(ABC):
    """A family of problems. Subclasses implement `_candidates`/`sample` and may override extraction."""

    name: str

    @abstractmethod
    def sample(self, n: int, seed: int, split: Split) -> list[Problem]:
        """`n` problems of `split`, the same for the same seed."""

    def render_question(self, problem: Problem) -> str:
        """The question as the agents see it (tasks for real models add a format instruction here)."""
        return problem.question

    def extract_answer(self, text: str) -> str | None:
        return extract_number_answer(text)

    def is_correct(self, predicted: str | None, problem: Problem) -> bool:
        return predicted is not None and predicted == problem.answer
