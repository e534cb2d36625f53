"""A generative verifier (GenRM-CoT, Zhang et al. 2024, arXiv 2408.15240): the verifier LM first solves the problem
itself, then judges the response's answer against its own; P(correct) comes from the scores below through a
calibration fitted on held-out data (calibration.py).

Why not only a classifier head: on the embedded arithmetic task, whether "The answer is 7" is right depends on
a+b-c, which a 1.5M-parameter model cannot compute in one forward pass (a last-token classifier stayed at ROC-AUC
0.49), but can compute step by step. The sequence is

    prompt | the verifier's solution + " Proposed:" (written by the verifier) | " X. Verdict:" | " Yes" / " No"

where X is the response's final answer, written in for the verifier so that the verdict compares two adjacent
values. Training targets come from the ground truth (the task's worked solution, the label); the loss is next-token
cross-entropy on the target plus a binary cross-entropy on the verdict logit, so the verdict is trained directly.
X is a target only when it is right, so after "Proposed:" the verifier learns to write its own answer.

Two scores can be read from the same forward pass (`score`): `answer` (the default for new verifiers), the
log-likelihood of " X." there, high when X agrees with the verifier's own answer, together with the verifier's
confidence in its own solution (calibration.py puts the two together); or `verdict`, logit(" Yes") - logit(" No")
after "Verdict:". Why `answer`: the verifier solved 94% of the test questions itself, but its verdict
still said Yes to near misses (33 proposed against its own 32), ROC-AUC 0.82; copying a number it has just written
is what even this model does reliably, ROC-AUC 0.97 (docs/verifier.md).

Saved as a normal Hugging Face causal-LM directory plus `maporl_verifier.json` (kind, calibration, max_new_tokens,
samples, score).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from maporl.errors import UsageError
from maporl.tasks.base import extract_number_answer, last_answer_word
from maporl.verifiers.base import ProbabilityVerifier, positions_from_mask
from maporl.verifiers.calibration import Calibration

PROPOSED = "Proposed:"
VERDICT = "Verdict:"
META_FILE = "maporl_verifier.json"
SCORES = ("answer", "verdict")


def judge_messages(question: str, response: str) -> list[dict]:
    # The question comes last, right before the verifier's own solution, as in the base model's own prompts: with
    # the response after it, the tiny verifier misread the question's numbers far more often (solved 56% vs 66%).
    # Without the response at all it did worse still (ROC-AUC 0.64 vs 0.70).
    return [{"role": "user", "content": f"Proposed solution: {response}\nIs its final answer right?\n{question}"}]


def proposed_answer(response: str) -> str:
    """The response's final answer as the verifier is shown it (a number, else a word after "answer is")."""
    number = extract_number_answer(response)
    if number is not None:
        return number
    return last_answer_word(response) or "none"


def written_part(row: dict) -> str:
    """What the verifier writes itself: the worked solution (when the data has one), then "Proposed:"."""
    solution = (row.get("solution") or "").strip()
    return f"{solution} {PROPOSED}" if solution else PROPOSED


def given_part(response: str) -> str:
    """What is written in for it after "Proposed:": the response's answer, next to the verifier's own (copying it
    was the verifier's most frequent error when it had to write it itself)."""
    return f" {proposed_answer(response)}. {VERDICT}"


def answer_span(tokenizer, written_ids: list[int], response: str) -> tuple[int, int]:
    """Token positions [start, end), counted from the start of the verifier's written part, of the response's
    answer and the period after it (" 33." in " 33. Verdict:"; the period marks where the number ends)."""
    start = len(written_ids)
    return start, start + len(_ids(tokenizer, f" {proposed_answer(response)}."))


def verdict_ids(tokenizer) -> tuple[list[int], int, int]:
    """(shared prefix, yes id, no id): " Yes" and " No" tokenized and split at their first differing token (a
    tokenizer may give the space its own token). The verdict is read at that token."""
    yes = tokenizer(" Yes", add_special_tokens=False)["input_ids"]
    no = tokenizer(" No", add_special_tokens=False)["input_ids"]
    k = next((i for i, (a, b) in enumerate(zip(yes, no, strict=False)) if a != b), None)
    if k is None:
        raise ValueError("the tokenizer cannot tell ' Yes' from ' No' at any token")
    return yes[:k], yes[k], no[k]


def prompt_text(tokenizer, question: str, response: str) -> str:
    return tokenizer.apply_chat_template(
        judge_messages(question, response), add_generation_prompt=True, tokenize=False
    )


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_for_training(tokenizer, rows: Sequence[dict], max_tokens: int = 768) -> dict[str, torch.Tensor]:
    """Right-padded prompt + target; `labels` cover the target, `verdict_at` is the position whose next-token
    logits give the verdict, `y` the label."""
    shared, yes, no = verdict_ids(tokenizer)
    seqs, n_prompt, r_written = [], [], []
    for r in rows:
        r_written.append(_ids(tokenizer, " " + written_part(r)))
        target = r_written[-1] + _ids(tokenizer, given_part(r["response"])) + shared
        prompt = _ids(tokenizer, prompt_text(tokenizer, r["question"], r["response"]))
        prompt = prompt[-max(8, max_tokens - len(target) - 1) :]  # keep the end of an overlong prompt
        seqs.append(prompt + target + [yes if r["label"] else no])
        n_prompt.append(len(prompt))
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (s, n) in enumerate(zip(seqs, n_prompt, strict=True)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, n : len(s)] = ids[i, n : len(s)]
        if not rows[i]["label"]:
            # A wrong answer after "Proposed:" is no target: the verifier learns to write its own answer there, so
            # the likelihood it gives the response's answer measures agreement (the `answer` score).
            span = answer_span(tokenizer, r_written[i], rows[i]["response"])
            labels[i, n + span[0] : n + span[1]] = -100
    verdict_at = torch.tensor([len(s) - 2 for s in seqs])
    y = torch.tensor([float(r["label"]) for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "verdict_at": verdict_at, "y": y}


def training_loss(model, batch: dict[str, torch.Tensor], yes: int, no: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(next-token CE on the target + BCE on the verdict logit, verdict logits)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    shift_logits, shift_labels = logits[:, :-1], batch["labels"][:, 1:]
    ce = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, logits.shape[-1]), shift_labels.reshape(-1))
    at = logits[torch.arange(len(logits)), batch["verdict_at"]]
    verdict_logit = at[:, yes] - at[:, no]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(verdict_logit, batch["y"])
    return ce + bce, verdict_logit.detach()


@torch.no_grad()
def verdict_logits(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    max_new_tokens: int,
    device="cpu",
    samples: int = 1,
    score: str = "verdict",
) -> tuple[torch.Tensor, list[str]]:
    """The verifier writes its solution up to "Proposed:" (greedy; or `samples` solutions sampled at temperature 1,
    whose scores are averaged: a vote over its own solutions); the response's answer and "Verdict:" are written in.
    Returns (the uncalibrated scores, (pairs, k); the texts the verifier wrote). By `score`: `verdict`, k = 1:
    logit(" Yes") - logit(" No") at the verdict; `answer`, k = 2: the log-likelihood the verifier gives the
    response's answer (and the period after it) right after its own solution, which is high when the two agree, and
    its confidence in that solution, the lowest log-probability among the tokens it wrote (calibration.py)."""
    if score not in SCORES:
        raise ValueError(f"unknown verifier score {score!r}; choose one of {', '.join(SCORES)}")
    if samples <= 1:
        return _verdict_logits(model, tokenizer, pairs, max_new_tokens, device, False, score)
    rows = [p for p in pairs for _ in range(samples)]
    # A fixed seed in a forked RNG: the same pairs get the same score, and the caller's RNG stream is untouched.
    with torch.random.fork_rng(devices=[device] if str(device).startswith("cuda") else []):
        torch.manual_seed(0)
        logits, texts = _verdict_logits(model, tokenizer, rows, max_new_tokens, device, True, score)
    return logits.reshape(len(pairs), samples, -1).mean(1), texts


def _verdict_logits(model, tokenizer, pairs, max_new_tokens: int, device, sample: bool, score: str):
    shared, yes, no = verdict_ids(tokenizer)
    tokenizer.padding_side = "left"
    prompts = [prompt_text(tokenizer, q, r) for q, r in pairs]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    out = model.generate(
        **enc,
        **({"do_sample": True, "temperature": 1.0, "top_k": 0} if sample else {"do_sample": False}),
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        stop_strings=[PROPOSED],
        tokenizer=tokenizer,
    )
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    # Encode the parts separately, exactly as in training (the prompt's ids are the unpadded rows of `enc`), then
    # score the token after "Verdict:".
    seqs, spans, own_spans = [], [], []
    proposed = len(_ids(tokenizer, " " + PROPOSED))
    for row, row_mask, text, (_, response) in zip(enc["input_ids"], enc["attention_mask"], texts, pairs, strict=True):
        cut = text.find(PROPOSED)
        written = text[: cut + len(PROPOSED)] if cut >= 0 else text.rstrip() + " " + PROPOSED
        prompt_ids = row[row_mask.bool()].tolist()
        written_ids = _ids(tokenizer, written)
        start, end = answer_span(tokenizer, written_ids, response)
        spans.append((len(prompt_ids) + start, len(prompt_ids) + end))
        # The verifier's own solution: what it wrote before " Proposed:" (all it wrote, if that is nothing else).
        own_end = len(written_ids) - proposed if len(written_ids) > proposed else len(written_ids)
        own_spans.append((len(prompt_ids), len(prompt_ids) + own_end))
        seqs.append(prompt_ids + written_ids + _ids(tokenizer, given_part(response)) + shared)
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
    if score == "verdict":
        last = logits[:, -1].float()
        return (last[:, yes] - last[:, no]).cpu()[:, None], texts
    out = torch.empty(len(seqs), 2)
    for i, s in enumerate(seqs):
        for k, (start, end) in enumerate((spans[i], own_spans[i])):
            at = width - len(s) + torch.arange(start, end, device=ids.device)  # the tokens, left-padded
            logp = torch.log_softmax(logits[i, at - 1].float(), -1)  # position j is predicted at j - 1
            picked = logp.gather(-1, ids[i, at, None]).squeeze(-1)
            out[i, k] = picked.sum() if k == 0 else picked.min()
    return out, texts


class GenerativeVerifier(ProbabilityVerifier):
    """Scores (B, N, T) in [0, 1] from a directory written by `maporl verifier train --kind generative`."""

    def __init__(self, path: str | Path, task=None, device: str = "cpu", batch_size: int = 64):
        from maporl.models import load_base

        path = Path(path).expanduser()
        meta = json.loads((path / META_FILE).read_text())
        try:
            self.calibration = Calibration.from_dict(meta["calibration"])
            self.max_new_tokens, self.samples = int(meta["max_new_tokens"]), int(meta["samples"])
            self.score_kind = meta["score"]
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(
                f"{path / META_FILE} is not a verifier this version of maporl reads ({e!r}); train it again with "
                "`maporl verifier train`"
            ) from None
        self.model, self.tokenizer = load_base(str(path), device=device)
        self.model.eval()
        self.task, self.device, self.batch_size = task, device, batch_size

    def probabilities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            logit, _ = verdict_logits(
                self.model, self.tokenizer, chunk, self.max_new_tokens, self.device, self.samples, self.score_kind
            )
            out += self.calibration.probabilities(logit).tolist()
        return out
