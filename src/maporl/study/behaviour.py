"""What agents do when they discuss: the behaviours the paper's incentives target, per turn t >= 1 and per agent.

"The peers' majority right at t-1" means more than half of the agent's peers were right then, "wrong" more than half
wrong (the reward's `peers_state`: with 2 of 4 peers right it is neither). Each rate is a share of its
opportunities, and the number of opportunities comes with it, so a rate over few events can be read as such:

| behaviour | opportunity at (problem, agent i, turn t) | event |
|---|---|---|
| `self_correction` | i wrong at t-1, its peers' majority wrong at t-1 | i right at t |
| `adoption` | i wrong at t-1, its peers' majority right at t-1 | i right at t |
| `persuasion` | each peer j of i wrong at t-1, where i is right at t-1 and at t | j right at t |
| `conformity_error` | i right at t-1, its peers' majority wrong at t-1 | i wrong at t |
| `stubbornness` | i wrong at t-1, its peers' majority right at t-1 | i wrong at t |

Adoption and stubbornness share their opportunities and sum to 1.
"""

from __future__ import annotations

import torch

from maporl.rewards import peers_state

BEHAVIOURS = ("self_correction", "adoption", "persuasion", "conformity_error", "stubbornness")


def _cases(correct: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per behaviour, (opportunities, events) as (B, N, T-1) counts."""
    c = correct.bool()
    right_peers, wrong_peers = peers_state(c)
    before, now = c[:, :, :-1], c[:, :, 1:]
    majority_right, majority_wrong = right_peers[:, :, :-1], wrong_peers[:, :, :-1]
    # (opportunities, events) as (B, N, T-1) counts
    cases = {
        "self_correction": (~before & majority_wrong, ~before & majority_wrong & now),
        "adoption": (~before & majority_right, ~before & majority_right & now),
        "conformity_error": (before & majority_wrong, before & majority_wrong & ~now),
        "stubbornness": (~before & majority_right, ~before & majority_right & ~now),
    }
    kept = before & now  # agent i right at t-1 and at t
    wrong_before = (~before).sum(1, keepdim=True) - (~before).int()  # peers of i wrong at t-1
    fixed = (~before & now).sum(1, keepdim=True) - (~before & now).int()  # ... and right at t
    cases["persuasion"] = (kept * wrong_before, kept * fixed)
    return cases


def behaviour_metrics(correct: torch.Tensor) -> dict[str, dict[str, list]]:
    """Per behaviour: `count_per_turn` (opportunities), `events_per_turn` and `rate_per_turn` (length T-1: turns
    1..T-1, agents pooled); `count_per_agent_turn` and `rate_per_agent_turn` (N x (T-1)). A rate is None where its
    count is 0.

    Args:
        correct: (B, N, T) bool or 0/1 correctness.
    """
    cases, out = _cases(correct), {}
    for name in BEHAVIOURS:
        chances, events = (x.long().sum(0) for x in cases[name])  # (N, T-1)
        out[name] = {
            "count_per_turn": chances.sum(0).tolist(),
            "events_per_turn": events.sum(0).tolist(),
            "rate_per_turn": _rates(events.sum(0), chances.sum(0)),
            "count_per_agent_turn": chances.tolist(),
            "rate_per_agent_turn": [_rates(e, n) for e, n in zip(events, chances, strict=True)],
        }
    return out


def behaviour_per_problem(correct: torch.Tensor) -> dict[str, tuple[list[int], list[int]]]:
    """Per behaviour, each problem's (events, opportunities) over every agent and turn t >= 1: the units a paired
    bootstrap resamples (stats.paired_rate_difference).

    Args:
        correct: (B, N, T) bool or 0/1 correctness.
    """
    return {
        name: (events.long().sum((1, 2)).tolist(), chances.long().sum((1, 2)).tolist())
        for name, (chances, events) in _cases(correct).items()
    }


def parse_correct(rows: list[str]) -> torch.Tensor:
    """eval.json's `correct_per_problem` ("011 001 111": one 0/1 digit per turn, agents separated by spaces) as a
    (B, N, T) bool tensor."""
    return torch.tensor([[[d == "1" for d in agent] for agent in row.split()] for row in rows], dtype=torch.bool)


def _rates(events: torch.Tensor, chances: torch.Tensor) -> list[float | None]:
    return [None if n == 0 else e / n for e, n in zip(events.tolist(), chances.tolist(), strict=True)]
