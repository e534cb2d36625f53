"""Turn-0 accuracy of a base under construction, and which snapshot of a build to ship.

A build keeps the snapshot that does best on forms it never trained on (`arith_word_unseen`), among those whose
accuracy on the default task sits in the testbed's band: low enough that RL has room, high enough that it has
signal. Probe problems are drawn with their own seed, so they are not the problems `maporl eval` reports on.
"""

from __future__ import annotations

import torch

from maporl.prompts import first_turn_prompt
from maporl.tasks import get_task

PROBE_FAMILIES = ("arith_chain", "arith_word", "arith_word_unseen")
PROBE_SEED = 777  # not eval.seed's default: selection and report use different problems
BAND = (0.30, 0.60)  # turn-0 accuracy on the default task (arith_chain) that the testbed needs


@torch.no_grad()
def turn0_accuracy(model, tokenizer, family: str, num_problems: int, seed: int = 0, batch: int = 100) -> float:
    """Share of `num_problems` eval-split problems answered right at turn 0, sampled at temperature 1 as `maporl
    eval` samples, 64 new tokens at most."""
    task = get_task(family)
    problems = task.sample(num_problems, PROBE_SEED, "eval")
    was_training = model.training
    model.eval()
    with torch.random.fork_rng():  # the build's own random stream must not depend on whether it probes
        torch.manual_seed(seed)
        right = _count_right(model, tokenizer, task, problems, batch)
    model.train(was_training)
    return right / len(problems)


def _count_right(model, tokenizer, task, problems, batch: int) -> int:
    right = 0
    for start in range(0, len(problems), batch):
        part = problems[start : start + batch]
        chats = [list(first_turn_prompt(p.question)) for p in part]
        texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=64,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        answers = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        right += sum(task.is_correct(task.extract_answer(a), p) for a, p in zip(answers, part, strict=True))
    return right


def probe(model, tokenizer, num_problems: int) -> dict[str, float]:
    return {f: round(turn0_accuracy(model, tokenizer, f, num_problems), 4) for f in PROBE_FAMILIES}


def pick_snapshot(probes: dict[int, dict[str, float]]) -> int:
    """The step to ship: best unseen-forms accuracy inside the band; if no snapshot is in the band, the one whose
    default-task accuracy is nearest to it."""
    low, high = BAND
    inside = [s for s, p in probes.items() if low <= p["arith_chain"] <= high]
    if inside:
        return max(inside, key=lambda s: (probes[s]["arith_word_unseen"], -s))
    return min(probes, key=lambda s: (max(low - probes[s]["arith_chain"], probes[s]["arith_chain"] - high), s))
