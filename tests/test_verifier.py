"""Learned verifier: data generation and balancing, metrics, training, scoring, the HTTP server and its client."""

from __future__ import annotations

import json
import math

import pytest
import torch

from maporl.cli import main
from maporl.config import load_config, with_overrides
from maporl.errors import UsageError
from maporl.verifiers.calibration import fit_calibration, fit_temperature
from maporl.verifiers.data import balance, read_rows
from maporl.verifiers.train import ece, roc_auc


def row(q, r, y):
    return {"question": q, "response": r, "label": y}


def test_balance_dedups_and_balances_per_question():
    rows = [row("a", "x", 1), row("a", "x", 1), row("a", "y", 1), row("a", "z", 0)]  # a: 2 right (1 dup), 1 wrong
    rows += [row("b", "p", 0), row("b", "q", 0), row("b", "r", 0), row("b", "s", 1), row("b", "t", 1)]
    rows += [row("c", "u", 1)]  # one class only: dropped
    out, counts = balance(rows, seed=0)
    assert counts == {
        "input": 10,
        "input_correct": 6,
        "duplicates_removed": 1,
        "questions": 3,
        "questions_kept": 2,
        "output": 6,
        "output_correct": 3,
    }
    per_q = {q: sorted(r["label"] for r in out if r["question"] == q) for q in "abc"}
    assert per_q == {"a": [0, 1], "b": [0, 0, 1, 1], "c": []}
    assert len({(r["question"], r["response"]) for r in out}) == len(out)
    assert balance(rows, seed=0) == (out, counts)


def test_metrics_by_hand():
    assert roc_auc([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == 0.5
    assert roc_auc([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0]) == 0.75  # pairs: (.9>.6 .9>.1 .4<.6 .4>.1) = 3/4
    # Two bins: p=0.15 (2 answers, 1 right: |0.15-0.5|) and p=0.95 (2 answers, 2 right: |0.95-1|): (0.35+0.05)/2
    assert ece([0.15, 0.15, 0.95, 0.95], [0, 1, 1, 1]) == pytest.approx(0.2)
    logits, labels = torch.tensor([4.0, -4.0, 4.0, -4.0]), torch.tensor([1.0, 0.0, 0.0, 1.0])
    assert fit_temperature(logits, labels) > 5  # confidently wrong half the time: flatten
    assert fit_temperature(torch.tensor([0.1, -0.1] * 5), torch.tensor([1.0, 0.0] * 5)) < 0.2  # always right: sharpen
    # A verifier that leans to "Yes": logits 0-3 on wrong answers and 1-4 on right ones. The best calibration puts
    # P = 0.5 at logit 2 (b = -2 / T); a temperature alone keeps it at 0.
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0])
    labels = torch.tensor([0.0] * 4 + [1.0] * 4)
    t, b = fit_calibration(logits, labels)
    assert -b * t == pytest.approx(2.0, abs=0.15)
    t, b = fit_calibration(torch.tensor([2.0, 2.0, 2.0, 2.0]), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert 1 / (1 + math.exp(-(2.0 / t + b))) == pytest.approx(0.25, abs=0.02)  # one in four right: P ~ 0.25


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{oops\n", "not valid JSON"),
        ('{"question": "q", "response": "r"}\n', "needs 'question', 'response' and 'label'"),
        ('{"question": "q", "response": "r", "label": 2}\n', "'label' must be 0 or 1"),
        ("\n", "has no rows"),
    ],
)
def test_bad_verifier_data(tmp_path, content, fragment):
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(UsageError, match=fragment):
        read_rows(path)


def _steps_ok(text):
    import re

    steps = re.findall(r"(-?\d+)([+-])(\d+)=(-?\d+)\.", text)
    return [(int(a) + int(b) if o == "+" else int(a) - int(b)) == int(c) for a, o, b, c in steps]


def test_slipped_solution_has_one_wrong_step_carried_forward():
    import random

    from maporl.verifiers.data import slipped_solution

    rng = random.Random(0)
    for _ in range(50):
        s = slipped_solution(rng, "17+25=42. 42-9=33. 33+5=38. The answer is 38.")
        assert _steps_ok(s).count(False) == 1, s
        first, *rest = s.split(". ")
        assert first.startswith("17+25=") and s != "17+25=42. 42-9=33. 33+5=38. The answer is 38."
        # later steps start from the previous (possibly wrong) result, and the final answer is the last result
        values = [step.split("=")[1] for step in s.split(" The")[0].rstrip(".").split(". ")]
        assert s.endswith(f"The answer is {values[-1]}.") and values[-1] != "38"
    assert slipped_solution(rng, "The answer is 4.") is None


def test_practice_rows_are_balanced_labelled_and_filtered():
    from maporl.tasks import get_task
    from maporl.verifiers.data import practice_rows
    from maporl.verifiers.train import part_of

    task = get_task("arith_chain")
    rows = practice_rows(task, 200, seed=3, keep=lambda q: part_of(q) == "train")
    assert len(rows) == 200 and practice_rows(task, 200, seed=3, keep=lambda q: part_of(q) == "train") == rows
    assert sum(r["label"] for r in rows) == 100
    problems = {p.question: p for p in task.sample(600, seed=20_003, split="train")}
    for r in rows:
        p = problems[r["question"]]
        assert part_of(r["question"]) == "train" and r["solution"] == p.solution
        assert r["label"] == int(task.extract_answer(r["response"]) == p.answer)
        if r["response"][0].isdigit():  # a worked solution: right, or with exactly one slipped step
            assert _steps_ok(r["response"]).count(False) == 1 - r["label"]
    styles = {r["response"].split(".")[0][:10] for r in rows}
    assert {"I keep my ", "I go with ", "I agree wi"} <= styles
    assert len({r["question"] for r in rows}) == 200


def test_practice_needs_the_generative_verifier(tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text(json.dumps(row("q", "r", 1)) + "\n")
    argv = ["verifier", "train", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "v"), "--practice", "10"]
    assert main([*argv, "--kind", "classifier"]) == 2
    assert "verifier_train.practice needs verifier_train.kind=generative" in capsys.readouterr().err
    assert main([*argv[:-1], "-2"]) == 2
    assert "verifier_train.practice must be >= 0" in capsys.readouterr().err
    assert main([*argv, "--lr-final-ratio", "2"]) == 2
    assert "verifier_train.lr_final_ratio must be in [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse choices
        main([*argv, "--score", "vibes"])
    assert exit_info.value.code == 2 and "invalid choice: 'vibes'" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_model_dir):
    """gen-data -> balance -> train on the random tiny model (labels forced to vary: a random model is never right)."""
    d = tmp_path_factory.mktemp("verifier")
    common = [f"model.name_or_path={tiny_model_dir}", "discussion.num_agents=2", "discussion.turns=2"]
    assert main(["verifier", "gen-data", "--quiet", "--problems", "40", "--out", str(d / "raw.jsonl"), *common]) == 0
    rows = [json.loads(line) for line in (d / "raw.jsonl").read_text().splitlines()]
    assert len(rows) == 40 * 2 * 2 and {r["turn"] for r in rows} == {0, 1}
    # Make the label learnable from the text: responses that end with "!" are "correct".
    for k, r in enumerate(rows):
        r["label"] = k % 2
        r["response"] = r["response"][:20] + ("!" if k % 2 else "?")
    (d / "raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["verifier", "balance", str(d / "raw.jsonl"), "--out", str(d / "bal.jsonl")]) == 0
    argv = ["verifier", "train", str(d / "bal.jsonl"), "--out", str(d / "v"), "--base", str(tiny_model_dir)]
    assert main([*argv, "--quiet", "--kind", "classifier", "--epochs", "4", "--lr", "3e-3", "--batch-size", "16"]) == 0
    return d


def test_trained_verifier_directory_and_metrics(pipeline):
    from transformers import AutoModelForSequenceClassification

    metrics = json.loads((pipeline / "v" / "metrics.json").read_text())
    assert {"accuracy", "roc_auc", "ece", "num_eval"} <= metrics.keys() and metrics["num_eval"] > 0
    assert metrics["roc_auc"] > 0.9  # the "!" rule is easy
    assert (pipeline / "v" / "reliability.png").read_bytes().startswith(b"\x89PNG")
    model = AutoModelForSequenceClassification.from_pretrained(pipeline / "v")
    assert model.config.num_labels == 1 and model.config.maporl_temperature > 0


def test_solve_metrics_by_hand():
    from maporl.verifiers.train import solve_metrics

    rows = [{"solution": f"1+2=3. The answer is {a}.", "label": y} for a, y in [(3, 1), (3, 0), (5, 1), (5, 0)]]
    # The verifier's own solution is right on rows 0 and 3; what follows "Proposed:" is not its own.
    written = ["1+2=3. The answer is 3. Proposed: 9", "The answer is 4. Proposed: 3", "nothing", "The answer is 5."]
    probs = [0.9, 0.2, 0.1, 0.6]
    # Own right: rows 0 (right answer, 0.9) and 3 (wrong, 0.6): 1.0. Own wrong: rows 1 (wrong, 0.2), 2 (right, 0.1).
    m = solve_metrics(rows, written, probs)
    assert m == {"own_solve_rate": 0.5, "roc_auc_own_right": 1.0, "roc_auc_own_wrong": 0.0}
    # All solved: positives 0.9, 0.1 against negatives 0.2, 0.6 win 2 of 4 pairs; no unsolved rows.
    m = solve_metrics(rows, [written[0]] * 2 + [written[3]] * 2, probs)
    assert m == {"own_solve_rate": 1.0, "roc_auc_own_right": 0.5, "roc_auc_own_wrong": None}
    assert solve_metrics([{"label": 1}], ["3"], [0.5]) == {}  # old data without worked solutions


def test_generative_verifier_learns_a_rule_and_scores(pipeline, tiny_model_dir):
    """Solve-then-verdict verifier: targets are the worked solution + "Verdict: Yes/No"; here the label follows the
    "!" rule and the solution is left out, so the random model must learn the verdict from the response alone."""
    from maporl.records import Answer, Problem, Transcript
    from maporl.verifiers import load_learned_verifier
    from maporl.verifiers.generative import META_FILE, encode_for_training, proposed_answer, written_part

    rows = [json.loads(line) for line in (pipeline / "bal.jsonl").read_text().splitlines()]
    assert all(r["solution"].endswith("The answer is " + r["solution"].rsplit(" ", 1)[-1]) for r in rows)
    assert written_part(rows[0]) == rows[0]["solution"] + " Proposed:" and written_part({}) == "Proposed:"
    assert (
        proposed_answer("so 3+4=7. The answer is 7.") == "7" and proposed_answer("The answer is Neutral.") == "neutral"
    )
    assert proposed_answer("no idea") == "none"
    for r in rows:
        r.pop("solution")
    (pipeline / "gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = [
        "verifier",
        "train",
        str(pipeline / "gen.jsonl"),
        "--out",
        str(pipeline / "g"),
        "--base",
        str(tiny_model_dir),
    ]
    flags = [
        "--quiet",
        "--epochs",
        "8",
        "--lr",
        "3e-3",
        "--batch-size",
        "16",
        "--practice",
        "0",
        "--score",
        "verdict",
        "--lr-final-ratio",
        "1",
    ]
    assert main([*argv, *flags]) == 0
    metrics = json.loads((pipeline / "g" / "metrics.json").read_text())
    assert metrics["kind"] == "generative" and metrics["score"] == "verdict" and metrics["roc_auc"] > 0.9, metrics
    assert metrics["num_practice"] == 0
    assert (pipeline / "g" / META_FILE).is_file()

    from maporl.models import load_tokenizer

    batch = encode_for_training(load_tokenizer(tiny_model_dir), rows[:3])
    for i in range(3):  # labels cover exactly the target (body + verdict), the verdict position is the one before
        n = int(batch["attention_mask"][i].sum())
        assert batch["labels"][i, n - 1] == batch["input_ids"][i, n - 1] and int(batch["verdict_at"][i]) == n - 2
        assert (batch["labels"][i, n:] == -100).all()

    v = load_learned_verifier(pipeline / "g")
    pairs = [("What is 1+1?", "so. The answer is 2!"), ("What is 1+1?", "so. The answer is 2?")]
    assert v.probabilities(pairs) == v.probabilities(pairs)  # deterministic, greedy
    v.samples = 3  # a vote over sampled solutions: still deterministic (fixed seed in a forked RNG), still in [0, 1]
    state = torch.random.get_rng_state()
    voted = v.probabilities(pairs)
    assert voted == v.probabilities(pairs) and all(0 <= p <= 1 for p in voted)
    assert torch.equal(state, torch.random.get_rng_state())
    v.samples = 1
    answers = tuple(
        tuple(Answer(i, t, (), f"reply {i}{t}{'!' if i else '?'}", None) for i in range(3)) for t in range(2)
    )
    scores = v.score([Transcript(Problem("p", "What is 1+1?", "2", "t"), answers)] * 2)
    assert scores.shape == (2, 3, 2) and ((scores >= 0) & (scores <= 1)).all()
    assert (scores[:, 1:] > scores[:, :1]).all()


def test_answer_score_reads_agreement_with_the_verifiers_own_answer(pipeline, tiny_model_dir, tmp_path):
    """The `answer` score is the likelihood the verifier gives the response's answer after its own solution. Wrong
    answers are no training target there, so the verifier learns to write its own answer; here its solution is
    always "The answer is 7.", and responses answering 7 are right."""
    from maporl.models import load_tokenizer
    from maporl.verifiers import load_learned_verifier
    from maporl.verifiers.generative import answer_span, encode_for_training, verdict_logits

    rows = [json.loads(line) for line in (pipeline / "bal.jsonl").read_text().splitlines()]
    for k, r in enumerate(rows):
        r["solution"] = "The answer is 7."
        r["response"] = f"so. The answer is {7 if r['label'] else 10 + k % 80}."
    tok = load_tokenizer(tiny_model_dir)
    pick = [next(r for r in rows if r["label"]), next(r for r in rows if not r["label"])]
    batch = encode_for_training(tok, pick)
    written = tok(" The answer is 7. Proposed:", add_special_tokens=False)["input_ids"]
    for i, r in enumerate(pick):  # the answer " X." is a target only when it is right
        n = int((batch["labels"][i] == -100).cumprod(0).sum())  # the prompt's length
        start, end = answer_span(tok, written, r["response"])
        answer = tok.decode(batch["input_ids"][i, n + start : n + end])
        assert (answer == " 7.") == bool(r["label"]) and answer == r["response"][len("so. The answer is") :]
        assert (batch["labels"][i, n + start : n + end] == -100).all() != bool(r["label"])
    data, path = tmp_path / "a.jsonl", tmp_path / "a"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["verifier", "train", str(data), "--out", str(path), "--base", str(tiny_model_dir), "--quiet"]
    assert main([*argv, "--practice", "0", "--epochs", "6", "--lr", "3e-3", "--batch-size", "16"]) == 0
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["score"] == "answer" and metrics["roc_auc"] > 0.9 and metrics["own_solve_rate"] > 0.9, metrics
    v = load_learned_verifier(path)
    assert v.score_kind == "answer"
    right, wrong = v.probabilities([("What is 3+4?", "The answer is 7."), ("What is 3+4?", "The answer is 8.")])
    assert 0 <= wrong < right <= 1
    with pytest.raises(ValueError, match="unknown verifier score 'vibes'"):
        verdict_logits(v.model, v.tokenizer, [("q", "r")], 8, score="vibes")


def test_practice_rows_join_every_step_and_never_leak(pipeline, tiny_model_dir, tmp_path):
    from maporl.tasks import get_task
    from maporl.verifiers.data import practice_rows
    from maporl.verifiers.train import part_of, train_verifier

    rows = [json.loads(line) for line in (pipeline / "bal.jsonl").read_text().splitlines()]
    practice = practice_rows(get_task("arith_chain"), 24, seed=0, keep=lambda q: part_of(q) == "train")
    cfg = load_config(None, [f"verifier_train.base={tiny_model_dir}", "verifier_train.epochs=1"])
    m = train_verifier(rows, practice, tmp_path / "v", with_overrides(cfg, ["verifier_train.batch_size=64"]), True)
    assert m["num_practice"] == 24 and m["steps"] == -(-m["num_train"] // 64)
    leak = [dict(practice[0], question=next(r["question"] for r in rows if part_of(r["question"]) == "test"))]
    with pytest.raises(ValueError, match="1 practice questions are in the calibration or test split"):
        train_verifier(rows, leak, tmp_path / "w", cfg, quiet=True)


def test_model_verifier_scores_shape_and_range(pipeline, tiny_model_dir):
    from maporl.records import Answer, Problem, Transcript
    from maporl.verifiers.classifier import ClassifierVerifier

    v = ClassifierVerifier(pipeline / "v")
    answers = tuple(
        tuple(Answer(i, t, (), f"reply {i}{t}{'!' if i else '?'}", None) for i in range(3)) for t in range(2)
    )
    trs = [Transcript(Problem("p", "What is 1+1?", "2", "t"), answers)] * 2
    scores = v.score(trs)
    assert scores.shape == (2, 3, 2) and ((scores >= 0) & (scores <= 1)).all()
    assert (scores[:, 1:] > scores[:, :1]).all()  # "!" answers score higher


def test_training_with_a_model_verifier(pipeline, tiny_model_dir, tmp_path):
    from conftest import tiny_cfg

    from maporl import trainer

    cfg = tiny_cfg(tiny_model_dir, "verifier.kind=model", f"verifier.path={pipeline / 'v'}", "train.max_steps=1")
    result = trainer.train(cfg, tmp_path, quiet=True)
    assert result["steps"] == 1
    with pytest.raises(UsageError, match="verifier.path"):
        trainer.train(tiny_cfg(tiny_model_dir, "verifier.kind=model"), tmp_path / "x", quiet=True)


def _pipeline_bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "bench" / "verifier_pipeline.py"
    spec = importlib.util.spec_from_file_location("verifier_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_pipeline_benchmark_runs_on_the_embedded_base_with_sane_metrics(tmp_path):
    """The regression check of the learned verifier: bench/verifier_pipeline.py --smoke (40 problems, one epoch) on
    the shipped base, its last line the JSON it documents, every metric present and in range."""
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).parents[1] / "bench" / "verifier_pipeline.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--smoke", "--out", str(tmp_path / "v")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["sanity"] == [] and result["smoke"] and result["num_eval"] >= 2
    assert set(_pipeline_bench().KEYS) <= result.keys()
    assert result["calibration"]["kind"] == "answer_confidence" and len(result["calibration"]["weights"]) == 3


def test_the_pipeline_sanity_check_can_fail():
    sanity = _pipeline_bench().sanity
    good = {
        "accuracy": 0.9,
        "roc_auc": 0.95,
        "ece": 0.03,
        "num_eval": 400,
        "num_calibration": 400,
        "calibration": {"kind": "platt", "weights": [0.5], "bias": 1.0},
        "own_solve_rate": 0.9,
    }
    assert sanity(good) == []
    assert sanity({k: v for k, v in good.items() if k != "ece"}) == ["missing ece"]
    assert sanity(good | {"roc_auc": 1.5}) == ["roc_auc=1.5 outside [0, 1]"]
    assert sanity(good | {"calibration": {"weights": [float("nan")]}}) == [
        "calibration weights [nan] not finite numbers"
    ]
    assert sanity(good | {"num_eval": 1}) == ["fewer than 2 test rows"]
