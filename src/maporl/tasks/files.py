"""Problems from local files: `jsonl:PATH` (question + answer), `gsm8k:PATH` (answer ends "#### N"),
`anli:PATH` (premise / hypothesis / label). PATH is a JSONL file or, with pyarrow installed, a parquet file.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

from maporl.errors import UsageError
from maporl.records import Problem
from maporl.tasks.base import (
    ANLI_LABELS,
    NUMERIC_INSTRUCTION,
    Split,
    Task,
    extract_label_answer,
    extract_number_answer,
    normalize_number,
    problem_id,
    split_of,
)

MAX_FILE_BYTES = 512 * 2**20
MAX_LINE_CHARS = 1_000_000
ANLI_INSTRUCTION = (
    "Does the premise entail the hypothesis? Think step by step, then end with "
    "'The answer is entailment', 'The answer is neutral' or 'The answer is contradiction'."
)

Row = dict[str, object]
RowParser = Callable[[Row, str, str], Problem]


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


def _text_field(row: Row, key: str, where: str) -> str:
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where}: {key!r} must be a non-empty string")
    return value.strip()


def _require(row: Row, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise UsageError(f"{where}: missing field {missing[0]!r}; each line needs {' and '.join(map(repr, keys))}")


def qa_row(gsm8k: bool) -> RowParser:
    def parse(row: Row, family: str, where: str) -> Problem:
        _require(row, ("question", "answer"), where)
        question = _text_field(row, "question", where)
        answer = _answer_text(row["answer"], gsm8k, where)
        solution = (str(row["answer"]).rsplit("####", 1)[0].strip() or None) if gsm8k else None
        return Problem(problem_id(question), question, answer, family, solution)

    return parse


def anli_label(raw: object, where: str) -> str:
    """ANLI labels: 0/1/2 (the Hugging Face `facebook/anli` encoding), 'e'/'n'/'c' (the original files) or names."""
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < len(ANLI_LABELS):
        return ANLI_LABELS[raw]
    if isinstance(raw, str):
        text = raw.strip().lower()
        for label in ANLI_LABELS:
            if text in (label, label[0]):
                return label
    raise UsageError(f"{where}: 'label' must be 0/1/2, e/n/c or entailment/neutral/contradiction, got {raw!r}")


def anli_row(row: Row, family: str, where: str) -> Problem:
    _require(row, ("premise", "hypothesis", "label"), where)
    question = f"Premise: {_text_field(row, 'premise', where)}\nHypothesis: {_text_field(row, 'hypothesis', where)}"
    return Problem(problem_id(question), question, anli_label(row["label"], where), family)


def render_for(kind: str, question: str) -> str:
    """The prompt text for a problem of this kind: real models need the answer format spelled out."""
    if kind == "anli":
        return f"{question}\n{ANLI_INSTRUCTION}"
    if kind == "gsm8k":
        return f"{question}\n{NUMERIC_INSTRUCTION}"
    return question


def extract_for(kind: str, text: str) -> str | None:
    return extract_label_answer(text, ANLI_LABELS) if kind == "anli" else extract_number_answer(text)


def _jsonl_rows(path: Path) -> Iterator[tuple[str, object]]:
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            where = f"{path}:{lineno}"
            if not line.strip():
                continue
            if len(line) > MAX_LINE_CHARS:
                raise UsageError(
                    f"{where}: line longer than {MAX_LINE_CHARS:,} characters; shorten the problem or split it"
                )
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{where}: not valid JSON ({e.msg}); write one JSON object per line") from None


def _parquet_rows(path: Path) -> Iterator[tuple[str, object]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"reading {path} needs pyarrow; `pip install pyarrow` or convert the file to JSONL") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for damaged files
        raise UsageError(f"{path} is not a readable parquet file ({type(e).__name__}); re-export it") from None
    for i, row in enumerate(table.to_pylist(), 1):
        yield f"{path}:row {i}", row


def load_problems(path: Path, family: str, gsm8k: bool = False, parse: RowParser | None = None) -> list[Problem]:
    """Read and validate every row; errors name the file and line and say how to fix it."""
    parse = parse or qa_row(gsm8k)
    if not path.is_file():
        raise UsageError(f"task file {path} does not exist; pass an existing JSONL file, e.g. jsonl:data/train.jsonl")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise UsageError(f"task file {path} is larger than {MAX_FILE_BYTES >> 20} MiB; split it into smaller files")
    rows = _parquet_rows(path) if path.suffix == ".parquet" else _jsonl_rows(path)
    problems = []
    for where, row in rows:
        if not isinstance(row, dict):
            raise UsageError(f"{where}: expected a JSON object with 'question' and 'answer'")
        problems.append(parse(row, family, where))
    if not problems:
        raise UsageError(f'task file {path} has no problems; add lines like {{"question": ..., "answer": ...}}')
    return problems


class PoolTask(Task):
    """A fixed list of problems per split; sampling draws without replacement, cycling when asked for more."""

    def __init__(self, name: str, by_split: dict[str, list[Problem]], source: str):
        self.name = name
        self._by_split = by_split
        self._source = source

    def sample(self, n: int, seed: int, split: Split) -> list[Problem]:
        pool = self._by_split[split]
        if not pool:
            raise UsageError(
                f"{self._source} has no problems in the {split} split (the split is a hash of the question text); "
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


class FileTask(PoolTask):
    """Problems from a file; the hash split keeps train and eval disjoint (a file may hold only one of them)."""

    def __init__(self, spec: str):
        kind, _, path = spec.partition(":")
        self.path = Path(path).expanduser()
        self.kind = kind
        parse = anli_row if kind == "anli" else qa_row(gsm8k=kind == "gsm8k")
        problems = load_problems(self.path, spec, parse=parse)
        by_split: dict[str, list[Problem]] = {"train": [], "eval": []}
        for p in problems:
            by_split[split_of(p.question)].append(p)
        super().__init__(spec, by_split, str(self.path))

    def render_question(self, problem: Problem) -> str:
        return render_for(self.kind, problem.question)

    def extract_answer(self, text: str) -> str | None:
        return extract_for(self.kind, text)
