"""Synthetic arithmetic families with step-by-step solutions (the embedded model's world).

Every family writes the same chain-of-thought ("17+25=42. 42-9=33. The answer is 33.") so that skill transfers
between phrasings, while the question text differs.
"""

from __future__ import annotations

import random

from maporl.errors import UsageError
from maporl.records import Problem
from maporl.tasks.base import Split, Task, problem_id, split_of
from maporl.tasks.word_forms import word_problem


def solve_chain(terms: list[int], signs: list[str]) -> tuple[int, str]:
    """Left-to-right evaluation of terms[0] signs[0] terms[1] ...; returns (value, worked solution)."""
    value, steps = terms[0], []
    for sign, term in zip(signs, terms[1:], strict=True):
        new = value + term if sign == "+" else value - term
        steps.append(f"{value}{sign}{term}={new}.")
        value = new
    return value, " ".join(steps) + f" The answer is {value}."


class ArithmeticTask(Task):
    """Problems drawn uniformly from a family; a problem's split is a hash of its text."""

    def __init__(self, name: str, max_number: int = 50):
        self.name = name
        self.max_number = max_number

    def _draw(self, rng: random.Random) -> tuple[str, list[int], list[str]]:
        n = self.max_number
        if self.name == "arith_long":
            k = rng.choice((4, 5))
            terms = [rng.randint(1, n) for _ in range(k)]
            signs = [rng.choice("+-") for _ in range(k - 1)]
            expr = str(terms[0]) + "".join(f"{s}{t}" for s, t in zip(signs, terms[1:], strict=True))
            return f"What is {expr}?", terms, signs
        if self.name in ("arith_word", "arith_word_unseen"):
            return word_problem(rng, n, unseen=self.name == "arith_word_unseen")
        terms, signs = [rng.randint(1, n) for _ in range(3)], ["+", "-"]
        return f"What is {terms[0]}+{terms[1]}-{terms[2]}?", terms, signs

    def sample(self, n: int, seed: int, split: Split) -> list[Problem]:
        rng = random.Random(f"{self.name}/{split}/{seed}")
        out: list[Problem] = []
        seen: set[str] = set()
        for _ in range(100 * n + 10_000):  # bounded: a split smaller than n must not loop forever
            if len(out) == n:
                break
            question, terms, signs = self._draw(rng)
            if question in seen or split_of(question) != split:
                continue
            seen.add(question)
            value, solution = solve_chain(terms, signs)
            out.append(Problem(problem_id(question), question, str(value), self.name, solution))
        if len(out) < n:
            raise UsageError(f"{self.name} has fewer than {n} distinct {split} problems; ask for fewer problems")
        return out
