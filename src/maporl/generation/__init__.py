"""Generation backends behind one protocol, chosen from one table (vLLM and Ray plug in here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from maporl.prompts import Messages


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
