"""Verifier data: label every (question, agent response) of team rollouts, then deduplicate and class-balance.

Rows: {"question", "response", "label" (1 correct / 0 wrong), "problem_id", "agent", "turn", "parsed", "solution"}.
"solution" (the task's worked solution, else "The answer is X.") is what a generative verifier learns to write
before its verdict.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from maporl.errors import UsageError
from maporl.records import Transcript
from maporl.tasks import Task


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
