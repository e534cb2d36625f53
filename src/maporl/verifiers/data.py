"""Verifier data: label every (question, agent response) of team rollouts, then deduplicate and class-balance.

Rows: {"question", "response", "label" (1 correct / 0 wrong), "problem_id", "agent", "turn", "parsed", "solution"}.
"solution" (the task's worked solution, else "The answer is X.") is what a generative verifier learns to write
before its verdict.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from maporl.base.data import wrong_answer
from maporl.errors import UsageError
from maporl.records import Transcript
from maporl.tasks import Task

_STEP = re.compile(r"(-?\d+)([+-])(\d+)=(-?\d+)\.")
# Shares of the synthetic response styles, close to the balanced rollout data of the embedded team (59% worked
# solutions; the rest agree with a peer, keep the own answer or follow the majority).
PRACTICE_STYLES = {"solve": 0.6, "agree": 0.25, "keep": 0.1, "majority": 0.05}


def label_rows(transcripts: Iterable[Transcript], task: Task) -> list[dict]:
    rows = []
    for tr in transcripts:
        question = task.render_question(tr.problem)
        solution, answer = (tr.problem.solution or "").strip(), f"The answer is {tr.problem.answer}."
        solution = solution if "answer is" in solution else f"{solution} {answer}".strip()
        for turn in tr.answers:
            for a in turn:
                rows.append(
                    {
                        "question": question,
                        "response": a.response,
                        "label": int(task.is_correct(a.parsed, tr.problem)),
                        "problem_id": tr.problem.id,
                        "agent": a.agent,
                        "turn": a.turn,
                        "parsed": a.parsed,
                        "solution": solution,
                    }
                )
    return rows


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise UsageError(f"{path} does not exist; create it with `maporl verifier gen-data --out {path}`")
    rows = []
    for k, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{k}: not valid JSON ({e.msg}); write one JSON object per line") from None
        if not isinstance(row, dict) or not {"question", "response", "label"} <= row.keys():
            raise UsageError(f"{path}:{k}: each line needs 'question', 'response' and 'label' (0 or 1)")
        if row["label"] not in (0, 1):
            raise UsageError(f"{path}:{k}: 'label' must be 0 or 1, got {row['label']!r}")
        rows.append(row)
    if not rows:
        raise UsageError(f"{path} has no rows; generate data with `maporl verifier gen-data`")
    return rows


def write_rows(path: Path, rows: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            n += 1
    return n


def balance(rows: list[dict], seed: int = 0) -> tuple[list[dict], dict]:
    """Deduplicate (question, response) pairs, then keep as many correct as wrong responses for every question
    (the larger class is subsampled; questions with one class only are dropped). Returns (rows, counts)."""
    seen, unique = set(), []
    for row in rows:
        key = (row["question"], row["response"])
        if key not in seen:
            seen.add(key)
            unique.append(row)
    by_question: dict[str, list[list[dict]]] = defaultdict(lambda: [[], []])
    for row in unique:
        by_question[row["question"]][row["label"]].append(row)
    rng = random.Random(seed)
    out = []
    for question in sorted(by_question):
        wrong, right = by_question[question]
        k = min(len(wrong), len(right))
        out += rng.sample(wrong, k) + rng.sample(right, k)
    counts = {
        "input": len(rows),
        "input_correct": sum(r["label"] for r in rows),
        "duplicates_removed": len(rows) - len(unique),
        "questions": len(by_question),
        "questions_kept": sum(min(len(w), len(r)) > 0 for w, r in by_question.values()),
        "output": len(out),
        "output_correct": sum(r["label"] for r in out),
    }
    return out, counts


def slipped_solution(rng: random.Random, solution: str) -> str | None:
    """The worked solution with one step's result off by 1-10, later steps computed from the wrong value (the
    commonest error of the embedded team: 95% of its wrong worked solutions have such a slip). None when the
    solution has no `a+b=c.` steps."""
    steps = _STEP.findall(solution)
    if not steps:
        return None
    k = rng.randrange(len(steps))
    value, out = int(steps[0][0]), []
    for i, (_, sign, term, _) in enumerate(steps):
        new = value + int(term) if sign == "+" else value - int(term)
        if i == k:
            new = int(wrong_answer(rng, str(new)))
        out.append(f"{value}{sign}{term}={new}.")
        value = new
    return " ".join(out) + f" The answer is {value}."


def practice_rows(task: Task, n: int, seed: int, keep: Callable[[str], bool] = lambda q: True) -> list[dict]:
    """`n` synthetic verifier rows on fresh training-split problems whose question passes `keep`, half right and
    half wrong: a worked solution (right, or with one slipped step) or a short discussion answer ("I agree with
    Agent 2. The answer is X.", X right or off by 1-10). They give the verifier solving practice on many more
    problems than the rollouts cover; the labels come from the ground truth like the rollouts'. Needs integer
    answers."""
    from maporl.prompts import agent_label

    rng = random.Random(f"practice/{seed}")
    problems = [
        p for p in task.sample(2 * n + 100, seed=20_000 + seed, split="train") if keep(task.render_question(p))
    ]
    rows = []
    for i, problem in enumerate(problems[:n]):
        if not re.fullmatch(r"-?\d+", problem.answer):
            raise UsageError(f"--practice needs a task with integer answers; {task.name} has {problem.answer!r}")
        label = i % 2  # balanced
        answer = problem.answer if label else wrong_answer(rng, problem.answer)
        style = rng.choices(list(PRACTICE_STYLES), weights=list(PRACTICE_STYLES.values()))[0]
        solution = (problem.solution or "").strip()
        slipped = slipped_solution(rng, solution) if style == "solve" and solution else None
        if style == "solve" and label:
            response = solution
        elif style == "solve" and slipped:
            response = slipped
        elif style == "keep":
            response = f"I keep my answer. The answer is {answer}."
        elif style == "majority":
            response = f"I go with the majority. The answer is {answer}."
        else:
            response = f"I agree with {agent_label(rng.randrange(3))}. The answer is {answer}."
        label = int(task.is_correct(task.extract_answer(response), problem))
        target = solution if "answer is" in solution else f"{solution} The answer is {problem.answer}.".strip()
        rows.append(
            {
                "question": task.render_question(problem),
                "response": response,
                "label": label,
                "problem_id": problem.id,
                "practice": True,
                "solution": target,
            }
        )
    if len(rows) < n:
        raise UsageError(f"{task.name} has too few training problems for --practice {n}; pass a smaller --practice")
    return rows
