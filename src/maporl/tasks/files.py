"""Problems from local files: `jsonl:PATH` (question + answer per line), `gsm8k:PATH` (answer ends "#### N")."""

from __future__ import annotations

import json
import random
from pathlib import Path

from maporl.errors import UsageError
from maporl.records import Problem
from maporl.tasks.base import Split, Task, normalize_number, problem_id, split_of

MAX_FILE_BYTES = 512 * 2**20
MAX_LINE_CHARS = 1_000_000


def _answer_text(raw: object, gsm8k: bool, where: str) -> str:
    if gsm8k:
        if not isinstance(raw, str) or "####" not in raw:
            raise UsageError(f"{where}: GSM8K answer must be a string ending in '#### N'; fix the line or use jsonl:")
        raw = raw.rsplit("####", 1)[1]
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise UsageError(f"{where}: 'answer' must be a string or a number, got {type(raw).__name__}")
    text = str(raw).strip()
    if not text:
        raise UsageError(f"{where}: 'answer' is empty; give every problem a ground-truth answer")
    return normalize_number(text) or text


def load_problems(path: Path, family: str, gsm8k: bool) -> list[Problem]:
    """Read and validate every line; errors name the file and line and say how to fix it."""
    if not path.is_file():
        raise UsageError(f"task file {path} does not exist; pass an existing JSONL file, e.g. jsonl:data/train.jsonl")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise UsageError(f"task file {path} is larger than {MAX_FILE_BYTES >> 20} MiB; split it into smaller files")
    problems = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            where = f"{path}:{lineno}"
            if not line.strip():
                continue
            if len(line) > MAX_LINE_CHARS:
                raise UsageError(f"{where}: line longer than {MAX_LINE_CHARS:,} characters; shorten the problem")
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{where}: not valid JSON ({e.msg}); write one JSON object per line") from None
            if not isinstance(row, dict):
                raise UsageError(f"{where}: expected a JSON object with 'question' and 'answer'")
            missing = [k for k in ("question", "answer") if k not in row]
            if missing:
                raise UsageError(f"{where}: missing field {missing[0]!r}; each line needs 'question' and 'answer'")
            question = row["question"]
            if not isinstance(question, str) or not question.strip():
                raise UsageError(f"{where}: 'question' must be a non-empty string")
            answer = _answer_text(row["answer"], gsm8k, where)
            question = question.strip()
            problems.append(Problem(problem_id(question), question, answer, family))
    if not problems:
        raise UsageError(f'task file {path} has no problems; add lines like {{"question": ..., "answer": ...}}')
    return problems


class FileTask(Task):
    """Problems from a file; the hash split keeps train and eval disjoint (a file may hold only one of them)."""

    def __init__(self, spec: str):
        kind, _, path = spec.partition(":")
        self.name = spec
        self.path = Path(path).expanduser()
        self._problems = load_problems(self.path, spec, gsm8k=kind == "gsm8k")
        self._by_split: dict[str, list[Problem]] = {"train": [], "eval": []}
        for p in self._problems:
            self._by_split[split_of(p.question)].append(p)

    def sample(self, n: int, seed: int, split: Split) -> list[Problem]:
        pool = self._by_split[split]
        if not pool:
            raise UsageError(
                f"{self.path} has no problems in the {split} split (the split is a hash of the question text); "
                "add more problems to the file"
            )
        rng = random.Random(f"{self.name}/{split}/{seed}")
        if n <= len(pool):
            return rng.sample(pool, n)
        # Fewer problems than asked: cycle through reshuffled copies rather than fail (training draws many batches).
        out: list[Problem] = []
        while len(out) < n:
            out += rng.sample(pool, len(pool))
        return out[:n]
