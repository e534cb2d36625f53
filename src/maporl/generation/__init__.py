"""The generation protocol: requests in, typed completions out. Backends (hf.py, vllm.py, Ray) implement it and
`team.GENERATORS` picks one by `generation.backend`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from maporl.prompts import Messages


@dataclass(frozen=True)
class Completion:
    """One generated answer."""

    text: str  # the decoded answer, without the end-of-turn token
    truncated: bool = False  # cut off at max_new_tokens: the end-of-turn token was never sampled


@dataclass(frozen=True)
class GenRequest:
    """One answer to generate: the chat messages, which agent speaks, and the row's own sampling seed."""

    messages: Messages
    agent: int
    seed: int


class Generator(Protocol):
    tokens_generated: int  # for throughput reports: every answer's tokens up to and including its end of turn

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        """One completion per request, in order. The same requests (and seeds) give the same completions."""
        ...

    def sync(self, team) -> None:
        """After an update: sample from the team's current adapters from now on (copies them where needed)."""
        ...


def sampling_params(temperature: float, max_tokens: int, seed: int, stop_token_id: int):
    """vLLM SamplingParams for one row (its own seed); a plain namespace when vLLM is absent (CPU tests)."""
    kwargs = dict(temperature=temperature, max_tokens=max_tokens, seed=seed, stop_token_ids=[stop_token_id])
    try:
        from vllm import SamplingParams
    except ImportError:
        from types import SimpleNamespace

        return SimpleNamespace(**kwargs)
    return SamplingParams(**kwargs)
