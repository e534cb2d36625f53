"""The base build's probes: turn-0 accuracy scoring, its random stream, and which snapshot ships."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from maporl.base.probe import PROBE_SEED, pick_snapshot, turn0_accuracy
from maporl.tasks import get_task


def _probe(chain: float, word: float, unseen: float) -> dict[str, float]:
    return {"arith_chain": chain, "arith_word": word, "arith_word_unseen": unseen}


def test_pick_snapshot_takes_best_unseen_accuracy_inside_the_band():
    probes = {
        100: _probe(0.10, 0.10, 0.05),  # below the band
        200: _probe(0.35, 0.40, 0.30),
        300: _probe(0.55, 0.60, 0.50),  # best unseen inside the band
        400: _probe(0.70, 0.75, 0.70),  # better, but above the band
    }
    assert pick_snapshot(probes) == 300
    probes[250] = _probe(0.40, 0.45, 0.50)  # a tie on unseen accuracy goes to the earlier step
    assert pick_snapshot(probes) == 250


def test_pick_snapshot_outside_the_band_takes_the_nearest():
    assert pick_snapshot({100: _probe(0.10, 0, 0), 200: _probe(0.25, 0, 0), 300: _probe(0.70, 0, 0)}) == 200
    assert pick_snapshot({100: _probe(0.10, 0, 0), 200: _probe(0.62, 0, 0), 300: _probe(0.70, 0, 0)}) == 200


class _Oracle:
    """Answers every probe problem with its worked solution (or a wrong one), read off the prompt."""

    def __init__(self, tokenizer, family: str, wrong: bool):
        self.tokenizer, self.wrong, self.training = tokenizer, wrong, True
        self.solutions = {p.question: p.solution for p in get_task(family).sample(20, PROBE_SEED, "eval")}

    def eval(self):
        self.training = False

    def train(self, mode: bool = True):
        self.training = mode

    def generate(self, input_ids, attention_mask, **kwargs):
        rows = []
        for prompt in self.tokenizer.batch_decode(input_ids):
            question = next(q for q in self.solutions if q in prompt)
            answer = "The answer is 99999." if self.wrong else self.solutions[question]
            rows.append(input_ids.shape[1] * [0] + self.tokenizer(answer, add_special_tokens=False)["input_ids"])
        width = max(map(len, rows))
        return torch.tensor([r + [self.tokenizer.pad_token_id] * (width - len(r)) for r in rows])


def test_turn0_accuracy_scores_the_answers(tokenizer):
    for family in ("arith_chain", "arith_word_unseen"):
        assert turn0_accuracy(_Oracle(tokenizer, family, wrong=False), tokenizer, family, 20, batch=8) == 1.0
        oracle = _Oracle(tokenizer, family, wrong=True)
        assert turn0_accuracy(oracle, tokenizer, family, 20, batch=8) == 0.0
        assert oracle.training  # the build's train mode is given back


def test_probing_leaves_the_builds_random_stream_alone(tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    first = turn0_accuracy(model, tokenizer, "arith_chain", 4)
    assert torch.equal(torch.rand(3), expected)
    assert turn0_accuracy(model, tokenizer, "arith_chain", 4) == first  # seeded: the same probe, the same score
