"""What an agent sees: the turn-0 prompt and the discussion prompt (its own and its peers' previous answers).

Peers are shown by their final answer only: it keeps prompts short for small models, and the answer is what the
MAPoRL reward (and persuasion) is about.
"""

from __future__ import annotations

from collections.abc import Sequence

Messages = tuple[dict[str, str], ...]

DISCUSS_INSTRUCTION = "Answer again."
_MAX_SHOWN_CHARS = 64  # a peer's answer is a parsed number/label; cap it so hostile text cannot blow up prompts


def agent_label(agent: int) -> str:
    """Agents are 0-based in code and 1-based in text."""
    return f"Agent {agent + 1}"


def shown(answer: str | None) -> str:
    return "no answer" if answer is None else answer[:_MAX_SHOWN_CHARS]


def peers_of(agent: int, num_agents: int, peers_shown: int) -> list[int]:
    """The peers agent `agent` sees: the next `peers_shown` agents cyclically (all others when peers_shown < 0)."""
    others = [(agent + k) % num_agents for k in range(1, num_agents)]
    return others if peers_shown < 0 else others[:peers_shown]


def first_turn_prompt(question: str) -> Messages:
    return ({"role": "user", "content": question},)


def discussion_prompt(question: str, own: str | None, peers: Sequence[tuple[int, str | None]]) -> Messages:
    """Turn t > 0: the question, the agent's own previous final answer and each shown peer's previous final answer."""
    lines = [question, f"You said: {shown(own)}"]
    lines += [f"{agent_label(j)} said: {shown(a)}" for j, a in peers]
    lines.append(DISCUSS_INSTRUCTION)
    return ({"role": "user", "content": "\n".join(lines)},)
