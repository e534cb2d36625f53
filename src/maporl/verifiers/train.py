"""`maporl verifier train`: fine-tune a verifier (generative or classifier) on balanced data, calibrate, evaluate.

Questions are split by a hash of their text: 80% train, 10% calibration (fits the calibration: calibration.py), 10%
test (the reported metrics: accuracy at 0.5, ROC-AUC, expected calibration error over 10 bins, a reliability
diagram).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from pathlib import Path

import torch

from maporl.config import Config, VerifierTrainConfig
from maporl.errors import UsageError
from maporl.tasks.base import extract_number_answer
from maporl.verifiers import calibration
from maporl.verifiers import generative as gen
from maporl.verifiers.classifier import encode, logits_of
from maporl.verifiers.generative import PROPOSED


def part_of(question: str) -> str:
    h = int.from_bytes(hashlib.sha256(("verifier/" + question).encode()).digest()[:4], "big") % 10
    return "test" if h == 0 else "calib" if h == 1 else "train"


def roc_auc(scores: list[float], labels: list[int]) -> float:
    """Probability that a random positive outscores a random negative (ties count half), via ranks."""
    pos = sum(labels)
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def calibration_bins(probs: list[float], labels: list[int], bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, count) per equal-width probability bin."""
    out = []
    for b in range(bins):
        idx = [i for i, p in enumerate(probs) if b / bins <= p < (b + 1) / bins or (b == bins - 1 and p == 1.0)]
        if idx:
            out.append((sum(probs[i] for i in idx) / len(idx), sum(labels[i] for i in idx) / len(idx), len(idx)))
    return out


def ece(probs: list[float], labels: list[int], bins: int = 10) -> float:
    n = len(probs)
    return sum(c / n * abs(conf - acc) for conf, acc, c in calibration_bins(probs, labels, bins))


def solve_metrics(rows: list[dict], written: list[str], probs: list[float]) -> dict:
    """How often the generative verifier's own worked solution reaches the right answer (`own_solve_rate`), and
    the ROC-AUC on the rows where it does and where it does not (None where a part has one class only): both
    scores compare the response's answer with the verifier's own, so the second AUC shows what a wrong own
    solution costs."""
    truth = [extract_number_answer(r.get("solution") or "") for r in rows]
    if None in truth:  # rows without a worked solution (data made elsewhere): nothing to compare with
        return {}
    solved = [extract_number_answer(text.split(PROPOSED)[0]) == t for t, text in zip(truth, written, strict=True)]

    def auc_where(want: bool) -> float | None:
        part = [(p, int(r["label"])) for p, r, s in zip(probs, rows, solved, strict=True) if s == want]
        value = roc_auc([p for p, _ in part], [y for _, y in part])
        return None if math.isnan(value) else value

    return {
        "own_solve_rate": sum(solved) / len(solved),
        "roc_auc_own_right": auc_where(True),
        "roc_auc_own_wrong": auc_where(False),
    }


def reliability_plot(probs, labels, path: Path) -> None:
    from maporl.study.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    pts = calibration_bins(probs, labels)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
    ax.set(xlabel="predicted P(correct)", ylabel="observed accuracy", title="reliability (test split)")
    save_figure(fig, path)


DEFAULT_PRACTICE = 16000  # synthetic practice rows for the generative verifier (docs/verifier.md: measured)


def practice_for(cfg: Config) -> list[dict]:
    """The synthetic practice rows `cfg.verifier_train.practice` asks for (-1: the kind's default), on problems of
    `cfg.task.name` whose questions fall in the verifier's training split."""
    from maporl.tasks import get_task
    from maporl.verifiers.data import practice_rows

    v = cfg.verifier_train
    n = v.practice if v.practice >= 0 else DEFAULT_PRACTICE if v.kind == "generative" else 0
    if not n:
        return []
    return practice_rows(get_task(cfg.task.name), n, cfg.seed, keep=lambda q: part_of(q) == "train")


def split_rows(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by the part their question falls in (`part_of`): train, calibration, test."""
    parts: dict[str, list[dict]] = {"train": [], "calib": [], "test": []}
    for row in rows:
        parts[part_of(row["question"])].append(row)
    if min(len(p) for p in parts.values()) < 2 or len({r["label"] for r in parts["test"]}) < 2:
        raise UsageError("too little verifier data to split train/calibration/test; generate more with --problems")
    return parts


def _pairs(rows: list[dict]) -> list[tuple[str, str]]:
    return [(r["question"], r["response"]) for r in rows]


class ClassifierTrainee:
    """A sequence classifier (one logit at the last token) being trained: its loss, its logits, how it is saved."""

    def __init__(self, path: Path, tokenizer, v: VerifierTrainConfig):
        from transformers import AutoModelForSequenceClassification

        self.tokenizer = tokenizer
        self.model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        self.model.config.pad_token_id = tokenizer.pad_token_id
        torch.nn.init.zeros_(self.model.score.weight)  # start at P = 0.5 everywhere
        self.written: list[str] = []  # a classifier writes nothing
        self.calibration = "platt"  # the calibration `fit` makes of its one score

    def logits(self, chunk: list[dict]) -> torch.Tensor:
        return logits_of(self.model, encode(self.tokenizer, _pairs(chunk)))

    def loss(self, chunk: list[dict]) -> torch.Tensor:
        y = torch.tensor([float(r["label"]) for r in chunk])
        return torch.nn.functional.binary_cross_entropy_with_logits(self.logits(chunk), y)

    def save(self, out: Path, fitted: calibration.Calibration) -> None:
        self.model.config.maporl_temperature = 1 / fitted.weights[0]
        self.model.config.maporl_bias = fitted.bias
        self.model.save_pretrained(out)


class GenerativeTrainee:
    """A causal LM that writes its own solution, then judges the response's answer (verifiers/generative.py)."""

    def __init__(self, path: Path, tokenizer, v: VerifierTrainConfig, rows: list[dict]):
        from maporl.models import load_model

        self.tokenizer, self.v = tokenizer, v
        self.model = load_model(path)
        _, self.yes, self.no = gen.verdict_ids(tokenizer)
        body = [len(tokenizer(" " + gen.written_part(r), add_special_tokens=False)["input_ids"]) for r in rows]
        self.max_new_tokens = max(body) + 8
        self.written: list[str] = []  # what it wrote for the rows scored since the last clear (solve-rate metrics)
        self.calibration = "answer_confidence" if v.score == "answer" else "platt"

    def loss(self, chunk: list[dict]) -> torch.Tensor:
        return gen.training_loss(self.model, gen.encode_for_training(self.tokenizer, chunk), self.yes, self.no)[0]

    def logits(self, chunk: list[dict]) -> torch.Tensor:
        v = self.v
        logits, texts = gen.verdict_logits(
            self.model, self.tokenizer, _pairs(chunk), self.max_new_tokens, samples=v.samples, score=v.score
        )
        self.written.extend(texts)
        return logits

    def save(self, out: Path, fitted: calibration.Calibration) -> None:
        meta = {"kind": "generative", "calibration": fitted.to_dict()}
        meta |= {"max_new_tokens": self.max_new_tokens, "samples": self.v.samples, "score": self.v.score}
        (out / gen.META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        self.model.save_pretrained(out)


def _fit(trainee, train: list[dict], practice: list[dict], v: VerifierTrainConfig, rng, quiet: bool) -> int:
    """AdamW over `epochs` passes of `train` (shuffled by `rng`), the practice rows spread evenly over the steps, the
    learning rate decaying linearly to lr x lr_final_ratio; stops at `minutes`. Returns the steps taken."""
    from maporl.utils import lr_factor, progress

    model = trainee.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=v.lr, weight_decay=0.01)
    steps = v.epochs * math.ceil(len(train) / v.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: lr_factor(k, steps - 1, v.lr_final_ratio))
    per_step = math.ceil(len(practice) / steps)
    started, done = time.time(), 0
    model.train()
    with progress(steps, f"verifier ({v.kind})", quiet=quiet) as bar:
        for _ in range(v.epochs):
            order = rng.sample(train, len(train))
            for start in range(0, len(order), v.batch_size):
                if v.minutes and time.time() - started > 60 * v.minutes:
                    break
                extra = practice[done * per_step : (done + 1) * per_step]
                loss = trainee.loss(order[start : start + v.batch_size] + extra)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                done += 1
                bar.advance(f"loss {loss.item():.3f}")
    model.eval()
    return done


def train_verifier(rows: list[dict], practice: list[dict], out: Path, cfg: Config, quiet: bool = False) -> dict:
    """Train a `generative` (solve, then judge; see verifiers/generative.py) or `classifier` (last-token head)
    verifier as `cfg.verifier_train` says, on top of its `base` model; calibrate on the calibration split; write the
    directory, metrics.json, reliability.png. `practice` rows (`practice_for`; training split only) are spread evenly
    over the steps, each seen once, on top of the `batch_size` rollout rows of every step. `score` picks what the
    generative verifier's probability is calibrated from (`generative.verdict_logits`, `calibration.py`)."""
    from maporl.models import load_tokenizer, resolve_model_dir
    from maporl.utils import seed_everything

    v = cfg.verifier_train
    seed_everything(cfg.seed)
    parts = split_rows(rows)
    path = resolve_model_dir(v.base)
    tokenizer = load_tokenizer(path)
    trainee = (
        ClassifierTrainee(path, tokenizer, v)
        if v.kind == "classifier"
        else GenerativeTrainee(path, tokenizer, v, rows)
    )
    rng = random.Random(cfg.seed)  # shuffles the practice rows, then each epoch's rows
    practice = rng.sample(practice, len(practice))
    leaked = {r["question"] for r in practice} & {r["question"] for r in parts["calib"] + parts["test"]}
    if leaked:
        raise ValueError(f"{len(leaked)} practice questions are in the calibration or test split")
    started = time.time()
    steps = _fit(trainee, parts["train"], practice, v, rng, quiet)

    @torch.no_grad()
    def all_logits(part: list[dict]) -> torch.Tensor:
        return torch.cat([trainee.logits(part[i : i + 128]) for i in range(0, len(part), 128)])

    calib_labels = torch.tensor([float(r["label"]) for r in parts["calib"]])
    fitted = calibration.fit(trainee.calibration, all_logits(parts["calib"]), calib_labels)
    test_labels = [int(r["label"]) for r in parts["test"]]
    trainee.written.clear()
    probs = fitted.probabilities(all_logits(parts["test"])).tolist()
    generative = v.kind == "generative"
    metrics = {
        "kind": v.kind,
        "samples": v.samples if generative else None,
        "score": v.score if generative else None,
        "accuracy": sum((p >= 0.5) == bool(y) for p, y in zip(probs, test_labels, strict=True)) / len(probs),
        "roc_auc": roc_auc(probs, test_labels),
        "ece": ece(probs, test_labels),
        "num_eval": len(probs),
        "num_train": len(parts["train"]),
        "num_calibration": len(parts["calib"]),
        "num_practice": len(practice),
        "calibration": fitted.to_dict(),
        "steps": steps,
        "minutes": round((time.time() - started) / 60, 2),
        "base": str(path),
    }
    if generative and v.samples == 1:
        metrics.update(solve_metrics(parts["test"], trainee.written, probs))
    out.mkdir(parents=True, exist_ok=True)
    trainee.save(out, fitted)
    tokenizer.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    reliability_plot(probs, test_labels, out / "reliability.png")
    return metrics
