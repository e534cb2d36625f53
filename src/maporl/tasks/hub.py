"""Tasks from packages and the Hugging Face hub: `gsm8k`, `anli` (datasets, needs network or a warm cache) and
`gsm_symbolic` (GSM8K-style problems generated offline by the `reasoning-gym` package).

Hub tasks keep the dataset's official train/test split; for offline use download the files once and pass
`gsm8k:PATH` / `anli:PATH` (JSONL or parquet) instead.
"""

from __future__ import annotations

import os
import random

from maporl.errors import UsageError
from maporl.records import Problem
from maporl.tasks.base import NUMERIC_INSTRUCTION, Split, Task, normalize_number, problem_id, split_of
from maporl.tasks.files import PoolTask, anli_row, extract_for, qa_row, render_for

# name -> (dataset id, config, {our split: [dataset splits]}, row parser)
HUB = {
    "gsm8k": ("openai/gsm8k", "main", {"train": ["train"], "eval": ["test"]}, qa_row(gsm8k=True)),
    "anli": (
        "facebook/anli",
        None,
        {"train": ["train_r1", "train_r2", "train_r3"], "eval": ["test_r1", "test_r2", "test_r3"]},
        anli_row,
    ),
}


def _load_dataset(dataset_id: str, config: str | None):
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise OSError("offline mode is set")
    try:
        import datasets
    except ImportError:
        raise UsageError(f"loading {dataset_id} needs `pip install datasets`; or pass a local file") from None
    return datasets.load_dataset(dataset_id, config)


class HubTask(PoolTask):
    """A Hugging Face dataset with its official splits; rendering and parsing as for the same kind of file."""

    def __init__(self, name: str):
        dataset_id, config, splits, parse = HUB[name]
        try:
            ds = _load_dataset(dataset_id, config)
        except UsageError:
            raise
        except Exception as e:  # no network, no cache, renamed dataset: all end the same way for the user
            raise UsageError(
                f"could not load {dataset_id} from the Hugging Face hub ({type(e).__name__}); when offline, "
                f"download it once and pass {name}:PATH (JSONL or parquet)"
            ) from None
        by_split = {
            ours: [parse(dict(row), name, f"{dataset_id}[{s}] row {k}") for s in theirs for k, row in enumerate(ds[s])]
            for ours, theirs in splits.items()
        }
        super().__init__(name, by_split, dataset_id)

    def render_question(self, problem: Problem) -> str:
        return render_for(self.name, problem.question)

    def extract_answer(self, text: str) -> str | None:
        return extract_for(self.name, text)


class GsmSymbolicTask(Task):
    """GSM-Symbolic templates (reasoning-gym): unlimited offline GSM8K-style problems, hash split like arith_*."""

    name = "gsm_symbolic"

    def __init__(self):
        try:
            import reasoning_gym
        except ImportError:
            raise UsageError("task gsm_symbolic needs reasoning-gym: `pip install reasoning-gym`") from None
        self._rg = reasoning_gym

    def render_question(self, problem: Problem) -> str:
        return f"{problem.question}\n{NUMERIC_INSTRUCTION}"

    def sample(self, n: int, seed: int, split: Split) -> list[Problem]:
        out: list[Problem] = []
        seen: set[str] = set()
        rng = random.Random(f"{self.name}/{split}/{seed}")
        for _ in range(20):  # bounded: each round draws a fresh seeded batch
            batch = self._rg.create_dataset(self.name, size=2 * n + 16, seed=rng.randrange(2**31))
            for entry in batch:
                question = entry["question"].strip()
                if question in seen or split_of(question) != split:
                    continue
                seen.add(question)
                answer = normalize_number(str(entry["answer"])) or str(entry["answer"]).strip()
                cot = str(entry.get("metadata", {}).get("answer_cot") or "").rsplit("####", 1)[0].strip()
                out.append(Problem(problem_id(question), question, answer, self.name, cot or None))
                if len(out) == n:
                    return out
        raise UsageError(f"gsm_symbolic gave fewer than {n} distinct {split} problems; ask for fewer problems")
