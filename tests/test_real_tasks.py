"""GSM8K-, ANLI- and GSM-Symbolic-format tasks: fixtures, parquet, hub loading (faked), answer extraction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maporl import discussion
from maporl.config import DiscussionConfig
from maporl.errors import UsageError
from maporl.generation import Completion
from maporl.tasks import get_task, split_of
from maporl.tasks.base import ANLI_LABELS, NUMERIC_INSTRUCTION, extract_label_answer
from maporl.tasks.files import ANLI_INSTRUCTION, anli_label, load_problems

DATA = Path(__file__).parent / "data"
GSM8K = DATA / "gsm8k_sample.jsonl"
ANLI = DATA / "anli_sample.jsonl"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def all_problems(task) -> list:
    return [p for split in ("train", "eval") for p in task._by_split[split]]


def test_gsm8k_fixture_answers_and_solutions():
    task = get_task(f"gsm8k:{GSM8K}")
    problems = sorted(all_problems(task), key=lambda p: [r["question"] for r in rows(GSM8K)].index(p.question))
    assert [p.answer for p in problems] == ["33", "4.5", "2050", "56", "-4", "490", "7", "180"]
    assert problems[0].solution.startswith("She bakes 4 * 12")
    assert "####" not in problems[0].solution
    prompt = task.render_question(problems[0])
    assert prompt.startswith(problems[0].question) and prompt.endswith(NUMERIC_INSTRUCTION)
    assert task.extract_answer("so 48 - 15 = 33. The answer is 33.") == "33"
    assert task.is_correct(task.extract_answer("The answer is $2,050."), problems[2])
    assert task.is_correct(task.extract_answer("#### 4.50"), problems[1])


def test_anli_fixture_labels_prompt_and_extraction():
    task = get_task(f"anli:{ANLI}")
    by_uid = {r["uid"]: r for r in rows(ANLI)}
    problems = all_problems(task)
    assert len(problems) == 6
    expected = {"fx-1": "contradiction", "fx-2": "entailment", "fx-3": "neutral", "fx-4": "entailment"}
    expected |= {"fx-5": "contradiction", "fx-6": "neutral"}
    for uid, label in expected.items():
        (p,) = [p for p in problems if by_uid[uid]["hypothesis"] in p.question]
        assert p.answer == label
        assert p.question.startswith("Premise: " + by_uid[uid]["premise"])
        assert task.render_question(p).endswith(ANLI_INSTRUCTION)
    p = problems[0]
    assert task.is_correct(task.extract_answer(f"Step by step... The answer is {p.answer.upper()}."), p)
    assert task.extract_answer("The answer is maybe.") is None
    assert task.extract_answer("entailment") is None  # the final-answer phrase is required
    assert task.extract_answer("The answer is neutral. No wait, the answer is **contradiction**") == "contradiction"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is entailment.", "entailment"),
        ("the ANSWER IS: Neutral", "neutral"),
        ("answer is 'contradiction'", "contradiction"),
        ("The answer is 42", None),
        ("", None),
        ("x" * 2_000_000 + " The answer is neutral", "neutral"),
        ("The answer is neutral" + "y" * 10_000, None),  # only the bounded tail is scanned
    ],
)
def test_extract_label_answer(text, expected):
    assert extract_label_answer(text, ANLI_LABELS) == expected


@pytest.mark.parametrize(
    "row, fragment",
    [
        ({"premise": "p", "hypothesis": "h", "label": 3}, "'label' must be 0/1/2"),
        ({"premise": "p", "hypothesis": "h", "label": "maybe"}, "'label' must be 0/1/2"),
        ({"premise": "p", "hypothesis": "h", "label": True}, "'label' must be 0/1/2"),
        ({"premise": "p", "label": 0}, "missing field 'hypothesis'"),
        ({"premise": " ", "hypothesis": "h", "label": 0}, "'premise' must be a non-empty string"),
    ],
)
def test_anli_bad_rows_name_the_line(tmp_path, row, fragment):
    path = tmp_path / "a.jsonl"
    path.write_text(ANLI.read_text().splitlines()[0] + "\n" + json.dumps(row) + "\n")
    with pytest.raises(UsageError) as e:
        get_task(f"anli:{path}")
    assert f"{path}:2:" in str(e.value) and fragment in str(e.value)


def test_parquet_files_load_like_jsonl(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    for kind, src in (("gsm8k", GSM8K), ("anli", ANLI)):
        data = rows(src)
        if kind == "anli":  # parquet columns have one type: use the HF integer encoding
            data = [{**r, "label": ANLI_LABELS.index(anli_label(r["label"], "fixture"))} for r in data]
        path = tmp_path / f"{kind}.parquet"
        pq.write_table(pa.Table.from_pylist(data), path)
        from_parquet = {(p.question, p.answer) for p in all_problems(get_task(f"{kind}:{path}"))}
        from_jsonl = {(p.question, p.answer) for p in all_problems(get_task(f"{kind}:{src}"))}
        assert from_parquet == from_jsonl


def test_damaged_parquet_is_a_usage_error(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(UsageError, match="not a readable parquet file"):
        get_task(f"gsm8k:{path}")


def test_hub_tasks_use_official_splits(monkeypatch):
    import maporl.tasks.hub as hub

    gsm = rows(GSM8K)
    fake = {"train": gsm[:5], "test": gsm[5:]}
    monkeypatch.setattr(hub, "_load_dataset", lambda dataset_id, config: fake)
    task = get_task("gsm8k")
    assert {p.question for p in task.sample(5, 0, "train")} == {r["question"] for r in gsm[:5]}
    assert {p.question for p in task.sample(3, 0, "eval")} == {r["question"] for r in gsm[5:]}
    assert task.render_question(task.sample(1, 0, "eval")[0]).endswith(NUMERIC_INSTRUCTION)

    anli = rows(ANLI)
    fake = {f"{s}_r{r}": anli[r - 1 :: 3] if s == "train" else anli[:1] for s in ("train", "test") for r in (1, 2, 3)}
    monkeypatch.setattr(hub, "_load_dataset", lambda dataset_id, config: fake)
    task = get_task("anli")
    assert len(task._by_split["train"]) == 6 and len(task._by_split["eval"]) == 3
    assert task.extract_answer("The answer is neutral") == "neutral"


def test_hub_task_offline_gives_fix_it_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("gsm8k", "anli"):
        with pytest.raises(UsageError) as e:
            get_task(name)
        msg = str(e.value)
        assert f"pass {name}:PATH" in msg and "\n" not in msg


def test_gsm_symbolic_offline_deterministic_and_split():
    pytest.importorskip("reasoning_gym")
    task = get_task("gsm_symbolic")
    for split in ("train", "eval"):
        a = task.sample(20, seed=3, split=split)
        assert a == get_task("gsm_symbolic").sample(20, seed=3, split=split)
        assert len({p.question for p in a}) == 20
        assert all(split_of(p.question) == split for p in a)
        for p in a:
            assert p.answer.lstrip("-").replace(".", "").isdigit()
            assert p.solution and "####" not in p.solution and "\n" in p.solution  # the worked steps, no answer line
            assert not p.answer.endswith(".0")  # normalised like GSM8K's official check ('147.0' -> '147')
            assert task.render_question(p).endswith(NUMERIC_INSTRUCTION)
    assert {p.question for p in task.sample(20, 3, "train")} != {p.question for p in task.sample(20, 4, "train")}


class EchoAnswer:
    """A fake generator that answers every prompt with the first problem's ground truth."""

    weights_version = 0

    def __init__(self, text: str):
        self.text = text
        self.prompts: list[str] = []

    def generate(self, requests):
        self.prompts += [r.messages[-1]["content"] for r in requests]
        return [Completion(self.text)] * len(requests)


def test_discussion_uses_rendered_question_and_task_parser():
    task = get_task(f"anli:{ANLI}")
    problems = task.sample(2, 0, "train")
    gen = EchoAnswer("I think... The answer is neutral.")
    transcripts = discussion.run(problems, task, gen, DiscussionConfig(num_agents=2, turns=2), seed=0)
    assert all(ANLI_INSTRUCTION in prompt for prompt in gen.prompts)
    assert all(a.parsed == "neutral" for tr in transcripts for turn in tr.answers for a in turn)
    assert any("Agent 2 said: neutral" in prompt for prompt in gen.prompts)


def test_load_problems_keeps_old_signature():
    problems = load_problems(GSM8K, "gsm8k:x", gsm8k=True)
    assert len(problems) == 8
