"""The generation protocol: requests in, typed completions out. Backends (hf.py, vllm.py, Ray) implement it and
`registry.GENERATORS` picks one by `generation.backend`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from maporl.prompts import Messages


@dataclass(frozen=True)
class Completion:
    """One generated answer: the tokens the sampler drew are what the update trains on; the text is for reading."""

    text: str  # the decoded answer, without the end-of-turn token
    truncated: bool = False  # cut off at max_new_tokens: the end-of-turn token was never sampled
    token_ids: tuple[int, ...] = ()  # the sampled ids, the end-of-turn token included when it was sampled
    # The sampler's log-probability of each of them (at its temperature). Left out of equality: it moves in the last
    # bits with the batch a row was computed in, while the sampled ids do not.
    logprobs: tuple[float, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class GenRequest:
    """One answer to generate: the chat messages, which agent speaks, and the row's own sampling seed."""

    messages: Messages
    agent: int
    seed: int


class Generator(Protocol):
    tokens_generated: int  # for throughput reports: every answer's tokens up to and including its end of turn
    weights_version: int  # the version of the weights it samples from: every transcript records it

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        """One completion per request, in order. The same requests (and seeds) give the same completions."""
        ...

    def sleep(self) -> None:
        """After a rollout: release what generation holds on the device while the learner updates (vLLM)."""
        ...

    def sync(self, team, version: int | None = None) -> None:
        """After an update: sample from the team's current adapters from now on (copies them where needed), as
        weights version `version` (default: one more than before)."""
        ...


def encode_prompt(tokenizer, messages: Messages) -> list[int]:
    """The token ids an agent's prompt is generated from and trained with: its chat template with the generation
    prompt, tokenized without adding special tokens (the template writes its own; a second BOS would be a prompt
    the model never saw). Every generator and the update use this one function, so the ids are always the same."""
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def end_of_turn_ids(model, tokenizer) -> list[int]:
    """Every token that ends an answer: the tokenizer's eos and each eos of the model's generation config (chat
    models often have several, e.g. <|im_end|> and <|endoftext|>)."""
    configured = model.generation_config.eos_token_id  # None, one id or a list
    configured = configured if isinstance(configured, list) else [] if configured is None else [configured]
    return list(dict.fromkeys([tokenizer.eos_token_id, *configured]))


def sampling_params(temperature: float, max_tokens: int, seed: int, stop_token_ids: list[int]):
    """vLLM SamplingParams for one row (its own seed; the sampled token's log-probability returned); a plain
    namespace when vLLM is absent (CPU tests)."""
    kwargs = dict(temperature=temperature, max_tokens=max_tokens, seed=seed, stop_token_ids=stop_token_ids, logprobs=0)
    try:
        from vllm import SamplingParams
    except ImportError:
        from types import SimpleNamespace

        return SimpleNamespace(**kwargs)
    return SamplingParams(**kwargs)
