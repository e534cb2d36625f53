"""The classifier verifier: P(correct | question, response) from a sequence classifier built on a chat base model.

The classifier reads the chat-formatted question and the response (left-padded, so the last position is the last
response token) and outputs one logit; P = sigmoid(logit / T + b), with T and b fitted on held-out data and
stored in the model's config (`maporl_temperature`, `maporl_bias`). Saved and loaded as a normal Hugging Face directory
(AutoModelForSequenceClassification).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from maporl.errors import UsageError
from maporl.verifiers.base import ProbabilityVerifier, positions_from_mask
from maporl.verifiers.calibration import Calibration

MAX_TOKENS = 512  # question + response; longer inputs keep their end (where the final answer is)


def format_input(tokenizer, question: str, response: str) -> str:
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    return prompt + response


def encode(tokenizer, pairs: Sequence[tuple[str, str]], device="cpu") -> dict[str, torch.Tensor]:
    texts = [format_input(tokenizer, q, r) for q, r in pairs]
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    enc = tokenizer(
        texts, return_tensors="pt", padding=True, truncation=True, max_length=MAX_TOKENS, add_special_tokens=False
    )
    return {k: v.to(device) for k, v in enc.items()}


def logits_of(model, enc: dict[str, torch.Tensor]) -> torch.Tensor:
    """One logit per row, read at the last position (left padding: the last real token)."""
    mask = enc["attention_mask"]
    out = model.base_model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions_from_mask(mask))
    hidden = out.last_hidden_state[:, -1]
    return model.score(hidden).squeeze(-1).float()


class ClassifierVerifier(ProbabilityVerifier):
    """Scores (B, N, T) in [0, 1] from a directory written by `maporl verifier train --kind classifier`."""

    def __init__(self, path: str | Path, task=None, device: str = "cpu", batch_size: int = 64):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise UsageError(
                f"verifier directory {path} not found; train one with `maporl verifier train … --out DIR`"
            )
        self.model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        config = self.model.config
        self.calibration = Calibration.platt(
            float(getattr(config, "maporl_temperature", 1.0)), float(getattr(config, "maporl_bias", 0.0))
        )
        self.task, self.device, self.batch_size = task, device, batch_size

    @torch.no_grad()
    def probabilities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            enc = encode(self.tokenizer, pairs[start : start + self.batch_size], self.device)
            out += self.calibration.probabilities(logits_of(self.model, enc)).tolist()
        return out
