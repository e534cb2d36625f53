"""Generation backends behind one protocol, chosen from one table (vLLM and Ray plug in here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from maporl.prompts import Messages


class Completion(str):
    """Generated text that also says whether it was cut off at max_new_tokens (no end-of-turn token). A str, so
    generators that do not know (test fakes) can return plain strings: those count as finished."""

    truncated: bool = False


def completion(text: str, truncated: bool) -> Completion:
    c = Completion(text)
    c.truncated = truncated
    return c


@dataclass(frozen=True)
class GenRequest:
    """One answer to generate: the chat messages, which agent speaks, and the row's own sampling seed."""

    messages: Messages
    agent: int
    seed: int


class Generator(Protocol):
    def generate(self, requests: Sequence[GenRequest]) -> list[str]:
        """One completion per request, in order. The same requests (and seeds) give the same completions."""
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
