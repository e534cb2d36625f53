"""Advantage estimators: pure functions on tensors, in the style of verl's ``core_algos``, behind one entry point.

`compute_advantages(cfg, rewards, episodes, ..., bonus)` is the only function the trainer calls: it turns the step's
MAPoRL rewards (B, N, T), given as the influence reward and the incentive bonus, into per-token advantages (E, L-1) of
the trained episodes, and value targets for PPO; where the bonus enters is decided there alone. The learner receives
both and never computes either. Estimators, by `algo.name`:

- **ppo (value heads + GAE, the paper's setting).** `token_rewards` puts each episode's scalar MAPoRL reward on its
  last answer token and a −kl_coef·(log π − log π_ref) penalty on every answer token; `gae` then runs generalised
  advantage estimation *within* the answer (γ_gae = 1, λ = `algo.gae_lambda`). An episode is one agent's answer at
  one turn, so GAE bootstraps 0 after its last token: cross-turn credit reaches an answer only through the influence
  term R_inf of the reward, never through the value function. The released code then whitens the advantages per
  (turn, agent) group (`whiten`, `algo.whiten`).
- **grpo, rloo (group relative, no value head).** One scalar advantage per episode from its reward and the rewards
  of the other episodes of its group (`group_ids`, `algo.group_by`): `grpo_advantages` (mean-centred, divided by the
  group's Bessel-corrected std, as TRL and verl), `rloo_advantages` (leave-one-out baseline). Groups are formed over
  every answer of the step, trained or not.
- **sft (the naive-SFT baseline).** Advantage 1 on every trained token: with one on-policy pass the clipped
  surrogate's gradient is then exactly the negative log-likelihood's.

Caveat on the "problem_turn" grouping (measured; docs/algorithm.md). The influence reward is
``R(t,i) = (s[t,i] + F(t)) / D(t) + incentive(t,i)`` with ``F(t) = Σ_{k>t} γ^{k−t} · mean_j s[k,j]``: the team-future
term F(t)/D(t) is the *same for every agent* of a problem at turn t. Subtracting the mean over the N agents of one
(problem, turn) therefore cancels it exactly, and with it the only cross-turn credit the method has — what is left is
each agent's own score and incentives relative to its peers. That baseline does remove problem-difficulty noise, so
it is offered, but use it with care: with the plain influence reward it trains agents to beat their peers, not to lead
the team to the truth. Prefer "rollout" (the default: the same (problem, agent, turn) over the K discussions of a
problem), "problem" or "agent_turn" groups, or a value head (`ppo`).

Masks are 1 (or True) on valid tokens. Values at masked-out positions are never read: they are replaced with
`torch.where`, so padding garbage (even NaN/inf) cannot leak into a result. Everything here runs under
``torch.no_grad``: advantages and returns are regression/weighting targets, never differentiated through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from maporl.config import AlgoConfig
from maporl.records import EpisodeBatch


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


def group_mean(values: Tensor, group_ids: Tensor) -> Tensor:
    """(E,) the mean of `values` over each episode's group."""
    _, counts, sums = _group_sizes_and_sums(values, group_ids)
    return sums / counts


@torch.no_grad()
def grpo_advantages(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """GRPO advantages: reward minus its group's mean, divided by the group's sample std (Bessel-corrected, n − 1),
    as TRL's GRPOTrainer and verl's `compute_grpo_outcome_advantage` divide.

    Args:
        rewards: (E,) one scalar reward per episode.
        group_ids: (E,) integer group of each episode (any values; equal ids = same group).
        eps: Added to the std (verl's 1e-6; TRL adds 1e-4): keeps the division finite for a group whose rewards are
            all equal (its advantages are then 0).

    Returns:
        (E,) advantages; 0 for an episode alone in its group.
    """
    inverse, counts, sums = _group_sizes_and_sums(rewards, group_ids)
    centred = rewards - sums / counts
    # One slot per episode is enough room for the G ≤ E group sums; slots past G stay unused.
    squares = torch.zeros_like(rewards).index_add_(0, inverse, centred**2)[inverse]
    var = squares / (counts - 1).clamp(min=1)  # a group of one: centred is 0, and so is its advantage
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


GroupBy = Literal["rollout", "problem", "agent_turn", "problem_turn"]


def group_ids(by: GroupBy, problems: int, rollouts_per_problem: int, num_agents: int, turns: int) -> Tensor:
    """Group ids of a step's episodes laid out (B, N, T) and flattened: index = b·N·T + i·T + t, B = problems · K.

    The K = `rollouts_per_problem` discussions of a problem are consecutive: discussion b is of problem b // K.

    Args:
        by: "rollout": the same (problem, agent, turn) over the problem's K discussions (the default baseline);
            "problem": every answer of the K discussions of one problem;
            "agent_turn": the same (agent, turn) slot across every discussion of the step (AT-GRPO);
            "problem_turn": the N agents of one problem at one turn, over its K discussions (cancels the
            team-future term: see the module docstring).
        problems: distinct problems in the step.
        rollouts_per_problem: K.
        num_agents: N.
        turns: T.

    Returns:
        (problems·K·N·T,) int64 group ids.
    """
    b = torch.arange(problems * rollouts_per_problem)[:, None, None]
    p = b // rollouts_per_problem
    i = torch.arange(num_agents)[None, :, None]
    t = torch.arange(turns)[None, None, :]
    layouts = {
        "rollout": lambda: (p * num_agents + i) * turns + t,
        "problem": lambda: p,
        "agent_turn": lambda: i * turns + t,
        "problem_turn": lambda: p * turns + t,
    }
    if by not in layouts:
        raise ValueError(f"unknown grouping {by!r}; valid: {', '.join(layouts)}")
    return layouts[by]().expand(len(b), num_agents, turns).reshape(-1)


def whiten(advantages: Tensor, mask: Tensor, agent: Tensor, turn: Tensor, how: str) -> Tensor:
    """Whiten token advantages per (agent, turn) group (the released code), over the whole batch, or not at all.

    Args:
        advantages: (E, L) token advantages.
        mask: (E, L) 1 on answer tokens.
        agent: (E,) each episode's agent.
        turn: (E,) each episode's turn.
        how: "agent_turn", "batch" or "none" (`algo.whiten`). A group with a single valid token is left as it is.

    Returns:
        (E, L) whitened advantages, 0 at masked-out positions.
    """
    if how == "none":
        return advantages
    if how == "batch":
        return masked_whiten(advantages, mask)
    if how != "agent_turn":
        raise ValueError(f"unknown whitening {how!r}; valid: agent_turn, batch, none")
    out = advantages.clone()
    key = agent * (int(turn.max()) + 1 if turn.numel() else 1) + turn
    for k in torch.unique(key):
        rows = key == k
        if mask[rows].sum() > 1:
            out[rows] = masked_whiten(advantages[rows], mask[rows])
    return out


GROUP_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"grpo": grpo_advantages, "rloo": rloo_advantages}


@torch.no_grad()
def group_advantages(cfg: AlgoConfig, rewards: Tensor, bonus: Tensor | None = None) -> Tensor:
    """The group estimator `cfg.name` (grpo or rloo) over `cfg.group_by` groups: one advantage per answer.

    Args:
        cfg: name, group_by, rollouts_per_problem, incentive_placement.
        rewards: (B, N, T) rewards without the incentive bonus (R_inf), B = problems · rollouts_per_problem.
        bonus: (B, N, T) the incentive bonus (None: none). With `incentive_placement` "reward" the estimator sees
            rewards + bonus; with "advantage" it sees `rewards` and the bonus is added to its advantages.

    Returns:
        (B, N, T) advantages.
    """
    after = cfg.incentive_placement == "advantage"
    seen = rewards if bonus is None or after else rewards + bonus
    base = GROUP_ESTIMATORS[cfg.name](seen.reshape(-1), step_group_ids(cfg, rewards.shape)).reshape(rewards.shape)
    return base + bonus if after and bonus is not None else base


def step_group_ids(cfg: AlgoConfig, shape: torch.Size) -> Tensor:
    """The `cfg.group_by` group ids of a step's (B, N, T) answers, flattened (`group_ids`)."""
    b, n, t = shape
    return group_ids(cfg.group_by, b // cfg.rollouts_per_problem, cfg.rollouts_per_problem, n, t)


@torch.no_grad()
def compute_advantages(
    cfg: AlgoConfig,
    rewards: Tensor,
    episodes: EpisodeBatch,
    old_logprobs: Tensor | None = None,
    old_values: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    bonus: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Advantages of the trained episodes, and PPO's value targets, by `cfg.name` (see the module docstring).

    Args:
        cfg: The algorithm settings: name, group_by, rollouts_per_problem (group estimators); kl_coef, gae_lambda,
            whiten (ppo).
        rewards: (B, N, T) reward of every answer of the step without the incentive bonus (R_inf; the whole reward
            when `bonus` is None), B = problems · rollouts_per_problem.
        episodes: The E trained episodes (indices into `rewards`, answer masks (E, L-1)).
        old_logprobs: (E, L-1) log π_old of every token at sampling time (ppo).
        old_values: (E, L-1) V_old of every token (ppo).
        ref_logprobs: (E, L-1) log π_ref (ppo with kl_coef > 0; None: no KL penalty).
        bonus: (B, N, T) the incentive bonus, or None. Where it enters is decided here: in the reward (R = R_inf +
            bonus; every estimator, `incentive_placement` "reward") or, for grpo/rloo with "advantage", added to
            each answer's advantage after the baseline.

    Returns:
        (advantages (E, L-1), returns (E, L-1) for ppo else None), 0 at positions that are not answer tokens.
    """
    mask = episodes.answer_mask.bool()
    total = rewards if bonus is None else rewards + bonus
    reward = total[episodes.problem, episodes.agent, episodes.turn]  # (E,)
    if cfg.name == "ppo":
        if old_logprobs is None or old_values is None:
            raise ValueError("ppo advantages need the sampling policy's log-probabilities and values")
        ref = old_logprobs if ref_logprobs is None else ref_logprobs  # no reference: a KL of 0
        per_token = token_rewards(reward, old_logprobs, ref, mask, cfg.kl_coef)
        advantages, returns = gae(per_token, old_values, mask, gamma=1.0, lam=cfg.gae_lambda)
        return whiten(advantages, mask, episodes.agent, episodes.turn, cfg.whiten), returns
    if cfg.name == "sft":
        per_episode = torch.ones_like(reward)
    elif cfg.name in GROUP_ESTIMATORS:
        per_episode = group_advantages(cfg, rewards, bonus)[episodes.problem, episodes.agent, episodes.turn]
    else:
        raise ValueError(f"unknown algorithm {cfg.name!r}; valid: ppo, sft, {', '.join(GROUP_ESTIMATORS)}")
    return torch.where(mask, per_episode[:, None], torch.zeros_like(mask, dtype=per_episode.dtype)), None
