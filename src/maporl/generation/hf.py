"""Default backend: transformers `generate` over batches that mix agents (peft `adapter_names` per row).

Each row samples with its own seed: argmax(logits / T + Gumbel noise from the row's generator) is an exact sample
from softmax(logits / T), so a row's text does not depend on which other rows share its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from peft import PeftModel
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase

from maporl.generation import GenRequest


class SeededGumbelSampler(LogitsProcessor):
    """Turns greedy decoding into per-row seeded sampling at a temperature."""

    def __init__(self, seeds: Sequence[int], temperature: float):
        self.temperature = temperature
        self.generators = [torch.Generator().manual_seed(s % 2**63) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        vocab = scores.shape[-1]
        u = torch.stack([torch.rand(vocab, generator=g, dtype=torch.float64) for g in self.generators])
        gumbel = -torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-12)))
        return scores.float() / self.temperature + gumbel.to(scores.device, torch.float32)


@dataclass(frozen=True)
class AgentSlot:
    """Where an agent's policy lives: a model key and the peft adapter to activate (None: the bare model)."""

    model_key: str
    adapter: str | None = None


class HFGenerator:
    """Batched generation over one or more models; rows of one model go through as few `generate` calls as possible."""

    def __init__(
        self,
        models: dict[str, PreTrainedModel],
        tokenizers: dict[str, PreTrainedTokenizerBase],
        slots: Sequence[AgentSlot],
        temperature: float = 1.0,
        max_new_tokens: int = 64,
        batch_size: int = 64,
    ):
        self.models, self.tokenizers, self.slots = models, tokenizers, list(slots)
        self.temperature, self.max_new_tokens, self.batch_size = temperature, max_new_tokens, batch_size
        self.tokens_generated = 0  # for throughput reports (tokens up to and including each row's end of turn)

    def generate(self, requests: Sequence[GenRequest]) -> list[str]:
        out: list[str | None] = [None] * len(requests)
        by_model: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_model.setdefault(self.slots[r.agent].model_key, []).append(i)
        for key, rows in by_model.items():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                for i, text in zip(chunk, self._generate(key, [requests[i] for i in chunk]), strict=True):
                    out[i] = text
        return [t for t in out if t is not None]

    @torch.no_grad()
    def _generate(self, key: str, requests: list[GenRequest]) -> list[str]:
        model, tokenizer = self.models[key], self.tokenizers[key]
        texts = [
            tokenizer.apply_chat_template(list(r.messages), add_generation_prompt=True, tokenize=False)
            for r in requests
        ]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        kwargs = {}
        if isinstance(model, PeftModel):
            # peft mixed-adapter batch: one adapter name per row; the model must be in eval mode for this.
            kwargs["adapter_names"] = [self.slots[r.agent].adapter or "__base__" for r in requests]
        processors = LogitsProcessorList()
        if self.temperature > 0:
            processors.append(SeededGumbelSampler([r.seed for r in requests], self.temperature))
        generated = model.generate(
            **enc,
            **kwargs,
            do_sample=False,
            logits_processor=processors,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = generated[:, enc["input_ids"].shape[1] :]
        ended = (new_tokens == tokenizer.eos_token_id).int().cumsum(1)
        self.tokens_generated += int(((ended == 0) | ((ended == 1) & (new_tokens == tokenizer.eos_token_id))).sum())
        return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
