"""Default backend: transformers `generate` over batches that mix agents (peft `adapter_names` per row).

Each row samples with its own seed: argmax(logits / T + Gumbel noise hashed from (row seed, step, token)) is an
exact sample from softmax(logits / T), so a row's text does not depend on which other rows share its batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from peft import PeftModel
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from maporl import lora_batch
from maporl.generation import Completion, GenRequest, encode_prompt, end_of_turn_ids
from maporl.records import AgentSlot

_M32 = 0xFFFFFFFF
# merge_adapters=auto merges while the per-adapter weight copies take at most this many parameters (256 MB in fp32):
# the embedded base's 3 agents take 4M; a 135M model's would take 300M, where the base matmuls dominate anyway.
MERGE_AUTO_MAX = 64_000_000


def _mix32(x: int) -> int:
    """A 32-bit integer hash (bijective, good avalanche) on python ints in [0, 2**32)."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    return (x >> 16) ^ x


def _mix32_tensor(x: torch.Tensor) -> torch.Tensor:
    """`_mix32` bit for bit on int32 tensors (the uint32 pattern): products wrap mod 2**32, shifts are made logical."""
    x = ((x >> 16) & 0xFFFF) ^ x
    x = x * 0x45D9F3B
    x = ((x >> 16) & 0xFFFF) ^ x
    x = x * 0x45D9F3B
    return ((x >> 16) & 0xFFFF) ^ x


def _as_int32(u: int) -> int:
    return u - 2**32 if u >= 2**31 else u


class SeededGumbelSampler(LogitsProcessor):
    """Turns greedy decoding into per-row seeded sampling at a temperature (temperature 0: plain greedy), and keeps
    the log-probability of every token it picks under softmax(logits / temperature) (temperature 0: / 1).

    The noise is counter-based: u = hash(row seed, decoding step, token id), computed for the whole batch in a few
    int32 ops on the logits' device. Per-row CPU generators (the first version) cost ~50 ms a step at a 49k vocab
    and batch 64, which made GPU generation CPU-bound; the hash is the same on every device and batch layout.
    """

    def __init__(self, seeds: Sequence[int], temperature: float):
        self.temperature = temperature
        self.seeds = [s % 2**63 for s in seeds]
        self.step = 0
        self.picked_logprobs: list[torch.Tensor] = []  # one (B,) tensor per decoding step
        self._seed_halves: tuple[torch.Tensor, torch.Tensor] | None = None

    def _keys(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The two per-row hash keys of this step, (B, 1) int32 each: `_mix32` of the seed halves and the step,
        computed on tensors (a Python loop over rows cost as much as the model on the tiny base)."""
        if self._seed_halves is None or self._seed_halves[0].device != torch.device(device):
            halves = ([_as_int32(s & _M32) for s in self.seeds], [_as_int32(s >> 32) for s in self.seeds])
            self._seed_halves = tuple(torch.tensor(h, dtype=torch.int32, device=device)[:, None] for h in halves)
        low, high = self._seed_halves
        k1 = _mix32_tensor(low ^ _mix32_tensor(high ^ _as_int32(_mix32(self.step))))
        return k1, _mix32_tensor(k1 ^ _as_int32(_mix32((self.step + 0x9E3779B9) & _M32)))

    def noise(self, vocab: int, device) -> torch.Tensor:
        """Gumbel(0, 1) noise (B, vocab) for the current step, float32 (24-bit uniforms: the largest value is 17.3)."""
        k1, k2 = self._keys(device)
        x = _mix32_tensor(_mix32_tensor(torch.arange(vocab, dtype=torch.int32, device=device)[None] ^ k1) ^ k2)
        u = (((x >> 8) & 0xFFFFFF).float() + 0.5) / 2.0**24
        return -torch.log(-torch.log(u))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scaled = scores.float() / (self.temperature or 1.0)
        out = scaled + self.noise(scores.shape[-1], scores.device) if self.temperature > 0 else scaled
        self.step += 1
        # generate() is greedy over what this returns, so its argmax is the token picked (it is the only processor).
        picked = out.argmax(-1, keepdim=True)
        self.picked_logprobs.append((scaled.gather(-1, picked) - scaled.logsumexp(-1, keepdim=True)).squeeze(-1))
        return out

    def logprobs(self) -> torch.Tensor:
        """(B, steps) log-probability of every picked token."""
        return torch.stack(self.picked_logprobs, 1) if self.picked_logprobs else torch.zeros(len(self.seeds), 0)


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
        merge_adapters: str = "auto",
    ):
        self.models, self.tokenizers, self.slots = models, tokenizers, list(slots)
        self.merge_adapters = merge_adapters
        self.temperature, self.max_new_tokens, self.batch_size = temperature, max_new_tokens, batch_size
        self.tokens_generated = 0  # for throughput reports (tokens up to and including each row's end of turn)
        self.weights_version = 0

    def sleep(self) -> None:
        """Nothing to release: the models are the learner's."""

    def sync(self, team, version: int | None = None) -> None:
        """Nothing to copy: this generator samples from the very models the learner updates."""
        self.weights_version = self.weights_version + 1 if version is None else version

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        out: list[Completion | None] = [None] * len(requests)
        by_model: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_model.setdefault(self.slots[r.agent].model_key, []).append(i)
        for key, rows in by_model.items():
            # Rows of one adapter side by side: the mixed-adapter forward then slices instead of gathering
            # (lora_batch.py). Rows do not depend on their batch mates, so the order changes no output.
            rows.sort(key=lambda i: self.slots[requests[i].agent].adapter or "")
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                for i, text in zip(chunk, self._generate(key, [requests[i] for i in chunk]), strict=True):
                    out[i] = text
        return [t for t in out if t is not None]

    def _merge(self, model: PeftModel, names: list[str]) -> bool:
        """Decode from merged weights? Only where the rows come in runs of one adapter (the caller sorts them so)."""
        if self.merge_adapters == "never" or len(lora_batch.runs(tuple(names))) > len(set(names)):
            return False
        if not lora_batch.mergeable(model, names):
            return False
        return self.merge_adapters == "always" or lora_batch.merged_size(model, len(set(names))) <= MERGE_AUTO_MAX

    @torch.no_grad()
    def _generate(self, key: str, requests: list[GenRequest]) -> list[Completion]:
        model, tokenizer = self.models[key], self.tokenizers[key]
        prompts = [encode_prompt(tokenizer, r.messages) for r in requests]
        width, pad = max(map(len, prompts)), tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
        merge, kwargs = contextlib.nullcontext(), {}
        if isinstance(model, PeftModel):
            names = [self.slots[r.agent].adapter or "__base__" for r in requests]
            if self._merge(model, names):
                merge = lora_batch.merged(model, names)
            else:  # peft mixed-adapter batch: one adapter name per row; the model must be in eval mode for this.
                kwargs["adapter_names"] = names
        eos = end_of_turn_ids(model, tokenizer)
        # Our sampler is the only logits processor: the model's own generation config (a repetition penalty, top-k)
        # would change the distribution the tokens come from, and the update would train on another one.
        config = GenerationConfig(
            do_sample=False, max_new_tokens=self.max_new_tokens, eos_token_id=eos, pad_token_id=pad
        )
        sampler = SeededGumbelSampler([r.seed for r in requests], self.temperature)
        with merge:
            generated = model.generate(
                input_ids=ids,
                attention_mask=attention,
                generation_config=config,
                logits_processor=LogitsProcessorList([sampler]),
                **kwargs,
            )
        new_tokens, logprobs = generated[:, width:].tolist(), sampler.logprobs().tolist()
        out = []
        for row, lps in zip(new_tokens, logprobs, strict=True):
            # generate() runs until every row has ended or max_new_tokens: a row with no end token was cut off.
            end = next((k for k, t in enumerate(row) if t in eos), None)
            n = len(row) if end is None else end + 1
            text = tokenizer.decode(row[:n], skip_special_tokens=True)
            out.append(Completion(text, end is None, tuple(row[:n]), tuple(lps[:n])))
            self.tokens_generated += n
        return out
