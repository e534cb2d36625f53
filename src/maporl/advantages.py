"""Advantage estimators: pure functions on tensors (torch only), in the style of verl's ``core_algos``.

Two families, selected by the trainer:

- **Token level (PPO with a value head, the paper's setting).** `token_rewards` puts each episode's scalar MAPoRL
  reward on its last answer token and a −kl_coef·(log π − log π_ref) penalty on every answer token; `gae` then runs
  generalised advantage estimation *within* the answer (γ_gae = 1, λ = 0.95, DESIGN §4.5). An episode is one agent's
  answer at one turn, so GAE bootstraps 0 after its last token: cross-turn credit reaches an answer only through the
  influence term R_inf of the reward, never through the value function. The released code then whitens the
  advantages per (turn, agent) group: `masked_whiten` on each group's rows.
- **Group relative (no value head).** One scalar advantage per episode from its reward and the rewards of the other
  episodes of its group: `grpo_advantages` (mean-centred, optionally divided by the group std), `rloo_advantages`
  (leave-one-out baseline). `group_ids_for` builds the groups for episodes laid out (B, N, T) and
  `compute_advantages` picks an estimator by name (`ADVANTAGE_ESTIMATORS`).

Caveat on the "problem_turn" grouping (DESIGN §4.7, measured). The influence reward is
``R(t,i) = (s[t,i] + F(t)) / D(t) + incentive(t,i)`` with ``F(t) = Σ_{k>t} γ^{k−t} · mean_j s[k,j]``: the team-future
term F(t)/D(t) is the *same for every agent* of a problem at turn t. Subtracting the mean over the N agents of one
(problem, turn) therefore cancels it exactly, and with it the only cross-turn credit the method has — what is left is
each agent's own score and incentives relative to its peers. That baseline does remove problem-difficulty noise, so
it is offered, but use it with care: with the plain influence reward it trains agents to beat their peers, not to lead
the team to the truth. Prefer "problem" or "agent_turn" groups, subtract the team-future term's own batch mean, or
use a value head (`gae`).

Masks are 1 (or True) on valid tokens. Values at masked-out positions are never read: they are replaced with
`torch.where`, so padding garbage (even NaN/inf) cannot leak into a result. Everything here runs under
``torch.no_grad``: advantages and returns are regression/weighting targets, never differentiated through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over the entries where `mask` is set.

    Args:
        x: Values, any shape.
        mask: Same shape as `x`; 1/True marks the entries to average.
        dim: Reduce only this dimension; None reduces everything to a 0-d tensor.

    Returns:
        The masked mean; 0 where no entry is valid (an empty selection has no mean, and 0 keeps sums finite).
    """
    mask = mask.bool()
    total = torch.where(mask, x, torch.zeros_like(x))
    if dim is None:
        return total.sum() / mask.sum().clamp(min=1)
    return total.sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise `x` to zero mean and unit variance, statistics taken over the masked entries only.

    Args:
        x: Values, any shape (typically (R, L) token advantages).
        mask: Same shape as `x`; 1/True marks the entries that count.
        shift_mean: If False, the mean is added back (only the scale changes), as in TRL/verl.
        eps: Added to the variance before the square root.

    Returns:
        Whitened values, same shape as `x`; 0 at masked-out positions. The variance is the population variance
        (divided by the count, not count − 1).
    """
    mask = mask.bool()
    mean = masked_mean(x, mask)
    centred = torch.where(mask, x - mean, torch.zeros_like(x))
    var = masked_mean(centred**2, mask)
    whitened = centred * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, torch.zeros_like(x))


@torch.no_grad()
def token_rewards(
    final_reward: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, kl_coef: float
) -> Tensor:
    """Per-token PPO rewards: a KL penalty on every answer token plus the episode reward on the last one.

    Args:
        final_reward: (R,) scalar reward of each episode (the MAPoRL reward R(t, i) of that answer).
        logprobs: (R, L) log π(token) under the sampling policy.
        ref_logprobs: (R, L) log π_ref(token) under the frozen reference.
        mask: (R, L) 1 on the episode's answer tokens.
        kl_coef: Weight of the per-token penalty −kl_coef·(log π − log π_ref).

    Returns:
        (R, L) rewards, 0 at masked-out positions. A row with no valid token gets no reward at all.
    """
    mask = mask.bool()
    zeros = torch.zeros_like(logprobs)
    rewards = torch.where(mask, -kl_coef * (logprobs - ref_logprobs), zeros)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, -1).amax(dim=1, keepdim=True)  # -1 for an empty row: matches no position
    is_last = positions == last
    return rewards + torch.where(is_last, final_reward[:, None].to(rewards.dtype), zeros)


@torch.no_grad()
def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation within each episode (row), vectorised over rows.

    ``δ_t = r_t + γ·V_{t+1} − V_t`` and ``A_t = δ_t + γλ·A_{t+1}``, where t+1 is the row's next *valid* token and
    both V and A are 0 after the last valid token (the episode ends there: no bootstrap into the next turn).

    Args:
        rewards: (R, L) per-token rewards (see `token_rewards`).
        values: (R, L) value estimates V(s_t) from the critic at sampling time.
        mask: (R, L) 1 on the answer tokens: one contiguous span per row, possibly after left padding and before
            right padding. Masked-out positions are skipped (their rewards/values are never read).
        gamma: Discount within the answer.
        lam: GAE λ.

    Returns:
        (advantages, returns), both (R, L), 0 at masked-out positions; returns = advantages + values.
    """
    mask = mask.bool()
    zeros = torch.zeros_like(values)
    rewards = torch.where(mask, rewards, zeros)
    values = torch.where(mask, values, zeros)
    advantages = torch.zeros_like(values)
    next_value = zeros[:, 0]
    next_adv = zeros[:, 0]
    for t in reversed(range(values.shape[1])):
        valid = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        advantages[:, t] = torch.where(valid, adv, 0.0)
        # Carry the state across masked-out positions, so right padding leaves the (0, 0) end-of-episode state and
        # a gap (if any) is skipped rather than treated as an episode boundary.
        next_value = torch.where(valid, values[:, t], next_value)
        next_adv = torch.where(valid, adv, next_adv)
    returns = torch.where(mask, advantages + values, zeros)
    return advantages, returns


def _group_sizes_and_sums(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For each episode: its group's index (0..G−1), size and reward sum, all (E,); ids may be any integers."""
    if rewards.dim() != 1 or rewards.shape != group_ids.shape:
        raise ValueError(
            f"rewards and group_ids must both be (E,), got {tuple(rewards.shape)} and {tuple(group_ids.shape)}"
        )
    _, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    counts = rewards.new_zeros(num_groups).index_add_(0, inverse, torch.ones_like(rewards))
    sums = rewards.new_zeros(num_groups).index_add_(0, inverse, rewards)
    return inverse, counts[inverse], sums[inverse]


@torch.no_grad()
def grpo_advantages(rewards: Tensor, group_ids: Tensor, scale_by_std: bool = True, eps: float = 1e-6) -> Tensor:
    """GRPO advantages: reward minus its group's mean, optionally divided by the group's std.

    Args:
        rewards: (E,) one scalar reward per episode.
        group_ids: (E,) integer group of each episode (any values; equal ids = same group).
        scale_by_std: Divide by (group std + eps), std with ``unbiased=False``. False gives the Dr. GRPO variant,
            which does not up-weight groups whose rewards barely differ.
        eps: Keeps the division finite for a group whose rewards are all equal (its advantages are then 0).

    Returns:
        (E,) advantages; 0 for an episode alone in its group.
    """
    inverse, counts, sums = _group_sizes_and_sums(rewards, group_ids)
    centred = rewards - sums / counts
    if not scale_by_std:
        return centred
    # One slot per episode is enough room for the G ≤ E group sums; slots past G stay unused.
    var = torch.zeros_like(rewards).index_add_(0, inverse, centred**2)[inverse] / counts
    return centred / (var.sqrt() + eps)


@torch.no_grad()
def rloo_advantages(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """REINFORCE leave-one-out advantages: reward minus the mean reward of the *other* members of its group.

    Args:
        rewards: (E,) one scalar reward per episode.
        group_ids: (E,) integer group of each episode.

    Returns:
        (E,) advantages; 0 for an episode alone in its group (it has no other member to compare with).
    """
    _, counts, sums = _group_sizes_and_sums(rewards, group_ids)
    others_mean = (sums - rewards) / (counts - 1).clamp(min=1)
    return torch.where(counts > 1, rewards - others_mean, torch.zeros_like(rewards))


GroupBy = Literal["problem", "agent_turn", "problem_turn"]


def group_ids_for(batch: int, num_agents: int, turns: int, by: GroupBy) -> Tensor:
    """Group ids for episodes laid out (B, N, T) and flattened: episode index = b·N·T + i·T + t.

    Args:
        batch: B, the number of problems.
        num_agents: N, agents per problem.
        turns: T, turns per discussion.
        by: "problem": the N·T answers of one problem form a group (GRPO/RLOO per problem);
            "agent_turn": the same (agent, turn) slot across the B problems (AT-GRPO);
            "problem_turn": the N agents of one problem at one turn (cancels the team-future term: see the module
            docstring).

    Returns:
        (B·N·T,) int64 group ids.
    """
    b = torch.arange(batch)[:, None, None]
    i = torch.arange(num_agents)[None, :, None]
    t = torch.arange(turns)[None, None, :]
    if by == "problem":
        ids = b
    elif by == "agent_turn":
        ids = i * turns + t
    elif by == "problem_turn":
        ids = b * turns + t
    else:
        raise ValueError(f"unknown grouping {by!r}; valid: 'problem', 'agent_turn', 'problem_turn'")
    return ids.expand(batch, num_agents, turns).reshape(-1)


ADVANTAGE_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "grpo": grpo_advantages,
    "grpo_no_std": lambda rewards, group_ids: grpo_advantages(rewards, group_ids, scale_by_std=False),
    "rloo": rloo_advantages,
}


def compute_advantages(name: str, rewards: Tensor, group_ids: Tensor) -> Tensor:
    """Group-relative advantages by estimator name.

    Args:
        name: One of `ADVANTAGE_ESTIMATORS`: "grpo", "grpo_no_std", "rloo".
        rewards: (E,) one scalar reward per episode.
        group_ids: (E,) integer group of each episode (see `group_ids_for`).

    Returns:
        (E,) advantages.

    Raises:
        ValueError: `name` is not a known estimator.
    """
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; valid: {', '.join(sorted(ADVANTAGE_ESTIMATORS))}")
    return ADVANTAGE_ESTIMATORS[name](rewards, group_ids)
