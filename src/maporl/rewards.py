"""The MAPoRL reward as pure functions on tensors shaped (B, N, T): B problems, N agents, T turns.

Symbols: s[b, i, t] is the verifier score of agent i's answer at turn t (already replaced by a validity penalty where
the answer was invalid, see `apply_validity_penalty`); c[b, i, t] its ground-truth correctness; γ the discount.

Influence-aware reward (`influence_reward`)::

    D(t)       = Σ_{k=t}^{T−1} γ^{k−t}
    R_inf(t,i) = ( s[t,i] + Σ_{k=t+1}^{T−1} γ^{k−t} · mean_j s[k,j] ) / D(t)      # mean over ALL agents, i included

Incentives (`incentives`), weights α = (α0, α1), β = (β0, β1). "Peers right at k" means the mean of c[k,j] over
j ≠ i is > 0.5, "peers wrong" that it is < 0.5; exactly 0.5 (possible for N ≥ 3) is neither, as in the released code.

- corrective, t ≥ 1, agent i's own change between t−1 and t:
  wrong→right: +α0 if peers were right at t−1 (adopted), +α1 if peers were wrong (fixed it alone);
  right→wrong: −α0 if peers were wrong at t−1 (talked into it), −α1 if peers were right (broke it alone).
  With N = 1 there are no peers, and the agent acted alone by definition: α1 applies (the released code does this).
- persuasive, t ≤ T−2 and N ≥ 2, the peers as a group between t and t+1:
  peers wrong at t and right at t+1: +β1 if i was right at t (persuaded them), +β0 if i was wrong too;
  peers right at t and wrong at t+1: −β1 if i was wrong at t (misled them), −β0 if i was right.

R(t,i) = R_inf(t,i) + incentive(t,i)  (`maporl_rewards`).

Two conventions. `paper` is exactly the rules above. `official` reproduces the released code
(`bonus_rule` in chanwoo-park-official/MAPoRL) for comparison and departs from the paper in three ways:

1. No incentive of any kind at t = 0 (persuasive terms at turn 0 are dropped).
2. Persuasive terms only on middle turns 0 < t < T−1, and with inverted signs: persuading peers to the truth is
   penalised and misleading them rewarded (almost certainly an upstream bug; kept so runs can be compared).
3. The incentive bonus is accumulated term by term, corrective first, and whenever the running bonus lands exactly on
   −1.0 it is nudged to −0.999 (upstream −1 marks an unreached turn). The nudge touches the bonus only, never R_inf:
   a reward of exactly −1 from the scores stays −1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from maporl.config import RewardConfig

Convention = Literal["paper", "official"]

# What each event means; the keys are also the metric names of `incentive_counts`.
EVENTS = {
    "corrective/adopt": "wrong→right at t while peers were right at t−1 (+α0)",
    "corrective/self_fix": "wrong→right at t while peers were wrong at t−1, or with no peers (+α1)",
    "corrective/talked_into_wrong": "right→wrong at t while peers were wrong at t−1 (−α0)",
    "corrective/broke_alone": "right→wrong at t while peers were right at t−1, or with no peers (−α1)",
    "persuasive/persuaded": "peers wrong at t, right at t+1, agent right at t (paper +β1, official −β1)",
    "persuasive/peers_fixed_anyway": "peers wrong at t, right at t+1, agent wrong at t (paper +β0, official −β0)",
    "persuasive/misled": "peers right at t, wrong at t+1, agent wrong at t (paper −β1, official +β1)",
    "persuasive/peers_broke_anyway": "peers right at t, wrong at t+1, agent right at t (paper −β0, official +β0)",
}


def _check_3d(name: str, x: torch.Tensor) -> None:
    if x.dim() != 3:
        raise ValueError(f"{name} must be shaped (B, N, T) = (problems, agents, turns), got shape {tuple(x.shape)}")


def _check_convention(convention: str) -> None:
    if convention not in ("paper", "official"):
        raise ValueError(f"convention must be 'paper' or 'official', got {convention!r}")


def apply_validity_penalty(scores: torch.Tensor, valid: torch.Tensor, penalty: float) -> torch.Tensor:
    """Replaces the score of every invalid answer by `penalty`.

    Args:
        scores: (B, N, T) verifier scores.
        valid: (B, N, T) bool, False where the answer failed the validity checks.
        penalty: the score an invalid answer gets (released code: −10).

    Returns:
        (B, N, T) scores; the penalty later reaches earlier turns through the team mean in `influence_reward`.
    """
    _check_3d("scores", scores)
    if valid.shape != scores.shape:
        raise ValueError(f"valid has shape {tuple(valid.shape)} but scores has {tuple(scores.shape)}; they must match")
    return torch.where(valid.bool(), scores, torch.full_like(scores, penalty))


def influence_reward(scores: torch.Tensor, gamma: float) -> torch.Tensor:
    """R_inf: own score plus the discounted team-mean score of every later turn, normalised by D(t).

    Args:
        scores: (B, N, T) float scores s.
        gamma: discount γ ≥ 0 (γ = 0 gives R_inf = s).

    Returns:
        (B, N, T) R_inf.
    """
    _check_3d("scores", scores)
    if not scores.is_floating_point():
        scores = scores.to(torch.get_default_dtype())
    T = scores.shape[-1]
    team = scores.mean(dim=1)  # (B, T): mean over all agents, i included
    future = torch.zeros_like(team)  # future[:, t] = Σ_{k>t} γ^{k−t} team[:, k], built backwards
    for t in range(T - 2, -1, -1):
        future[:, t] = gamma * (team[:, t + 1] + future[:, t + 1])
    norm = torch.tensor([sum(gamma**k for k in range(T - t)) for t in range(T)], dtype=scores.dtype)
    return (scores + future[:, None, :]) / norm.to(scores.device)


def peers_state(correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether each agent's peers (all j ≠ i) are right or wrong at each turn.

    Args:
        correct: (B, N, T) bool or 0/1 correctness c.

    Returns:
        (peers_right, peers_wrong), each (B, N, T) bool: the peer mean > 0.5 and < 0.5. A mean of exactly 0.5 is
        neither; with N = 1 the peer set is empty, its mean undefined, so both are False everywhere.
    """
    _check_3d("correct", correct)
    c = correct.bool().to(torch.get_default_dtype())
    N = c.shape[1]
    if N == 1:
        none = torch.zeros_like(c, dtype=torch.bool)
        return none, none.clone()
    peer_mean = (c.sum(dim=1, keepdim=True) - c) / (N - 1)
    return peer_mean > 0.5, peer_mean < 0.5


def incentive_events(correct: torch.Tensor, convention: Convention = "paper") -> dict[str, torch.Tensor]:
    """The (B, N, T) bool mask of every incentive event in `EVENTS`, with the convention's turn restrictions."""
    _check_3d("correct", correct)
    _check_convention(convention)
    c = correct.bool()
    right, wrong = peers_state(c)
    alone = c.shape[1] == 1
    # Corrective events live on t ≥ 1 and compare t−1 with t; pad turn 0 with False.
    prev, cur = c[..., :-1], c[..., 1:]
    fixed, broke = ~prev & cur, prev & ~cur
    right_prev, wrong_prev = right[..., :-1], wrong[..., :-1]
    corrective = {
        "corrective/adopt": fixed & right_prev,
        "corrective/self_fix": fixed & (wrong_prev | alone),
        "corrective/talked_into_wrong": broke & wrong_prev,
        "corrective/broke_alone": broke & (right_prev | alone),
    }
    # Persuasive events live on t ≤ T−2 and compare the peers at t with t+1; pad the last turn with False.
    up, down, me = wrong[..., :-1] & right[..., 1:], right[..., :-1] & wrong[..., 1:], c[..., :-1]
    persuasive = {
        "persuasive/persuaded": up & me,
        "persuasive/peers_fixed_anyway": up & ~me,
        "persuasive/misled": down & ~me,
        "persuasive/peers_broke_anyway": down & me,
    }
    pad = torch.zeros_like(c[..., :1])
    out = {k: torch.cat([pad, v], dim=-1) for k, v in corrective.items()}
    out |= {k: torch.cat([v, pad], dim=-1) for k, v in persuasive.items()}
    if convention == "official":
        for k in persuasive:
            out[k][..., 0] = False  # the released code returns before any incentive at turn 0
    return out


def incentives(
    correct: torch.Tensor, alpha: tuple[float, float], beta: tuple[float, float], convention: Convention = "paper"
) -> torch.Tensor:
    """The corrective plus persuasive incentive bonus of every (problem, agent, turn).

    Args:
        correct: (B, N, T) bool or 0/1 correctness c.
        alpha: (α0, α1) corrective weights.
        beta: (β0, β1) persuasive weights.
        convention: "paper" or "official" (see the module docstring).

    Returns:
        (B, N, T) float32 bonus. float32 because the official −1.0 → −0.999 nudge compares the running bonus
        exactly with −1, as the released float32 code does.
    """
    ev = {k: v.float() for k, v in incentive_events(correct, convention).items()}
    a0, a1 = alpha
    b0, b1 = beta
    bonus = (
        a0 * ev["corrective/adopt"]
        + a1 * ev["corrective/self_fix"]
        - a0 * ev["corrective/talked_into_wrong"]
        - a1 * ev["corrective/broke_alone"]
    )
    persuasive = (
        b1 * ev["persuasive/persuaded"]
        + b0 * ev["persuasive/peers_fixed_anyway"]
        - b1 * ev["persuasive/misled"]
        - b0 * ev["persuasive/peers_broke_anyway"]
    )
    if convention == "paper":
        return bonus + persuasive
    # At most one corrective and one persuasive event fire per slot, so nudging after each of the two stages is the
    # released code's nudge after every single term.
    bonus = torch.where(bonus == -1.0, torch.full_like(bonus, -0.999), bonus)
    bonus = bonus - persuasive
    return torch.where(bonus == -1.0, torch.full_like(bonus, -0.999), bonus)


def incentive_counts(correct: torch.Tensor, convention: Convention = "paper") -> dict[str, float]:
    """How often each incentive event fired, for logging.

    Args:
        correct: (B, N, T) bool or 0/1 correctness c.
        convention: "paper" or "official"; official never counts persuasive events at turn 0.

    Returns:
        {key: fraction of the B·N·T (problem, agent, turn) slots where the event fired}, keys as in `EVENTS`:
        `corrective/adopt` (wrong→right, peers were right), `corrective/self_fix` (wrong→right, peers were wrong or
        absent), `corrective/talked_into_wrong` (right→wrong, peers were wrong), `corrective/broke_alone`
        (right→wrong, peers were right or absent), `persuasive/persuaded` (peers wrong→right, agent right),
        `persuasive/peers_fixed_anyway` (peers wrong→right, agent wrong), `persuasive/misled` (peers right→wrong,
        agent wrong), `persuasive/peers_broke_anyway` (peers right→wrong, agent right).
    """
    return {k: v.float().mean().item() for k, v in incentive_events(correct, convention).items()}


def maporl_rewards(
    scores: torch.Tensor,
    correct: torch.Tensor,
    *,
    gamma: float,
    alpha: tuple[float, float],
    beta: tuple[float, float],
    convention: Convention = "paper",
) -> torch.Tensor:
    """The MAPoRL reward R = R_inf + incentive of every answer.

    Args:
        scores: (B, N, T) float verifier scores s, validity penalty already applied.
        correct: (B, N, T) bool or 0/1 correctness c, the source of the incentives.
        gamma: discount γ of the influence-aware term.
        alpha: (α0, α1) corrective weights.
        beta: (β0, β1) persuasive weights.
        convention: "paper" (default) or "official" (the released code, see the module docstring).

    Returns:
        (B, N, T) rewards, in the dtype of `scores` (float32 when integer scores are given).

    Raises:
        ValueError: a tensor is not 3-D, the shapes differ, or the convention is unknown.
    """
    _check_3d("scores", scores)
    _check_3d("correct", correct)
    if scores.shape != correct.shape:
        raise ValueError(
            f"scores has shape {tuple(scores.shape)} but correct has {tuple(correct.shape)}; they must match"
        )
    _check_convention(convention)
    r_inf = influence_reward(scores, gamma)
    return r_inf + incentives(correct, alpha, beta, convention).to(r_inf)


@dataclass(frozen=True)
class StepRewards:
    """A step's rewards in their two parts, (B, N, T) each. Where the bonus enters (in the reward, or after a group
    baseline) is `advantages.compute_advantages`'s decision alone; `total` is the reward R the paper writes."""

    influence: torch.Tensor  # R_inf, from the verifier scores (validity penalty applied)
    bonus: torch.Tensor  # the corrective + persuasive incentive, in the dtype of `influence`
    correct: torch.Tensor  # the correctness the incentives read

    @property
    def total(self) -> torch.Tensor:
        """R = R_inf + incentive (`maporl_rewards`)."""
        return self.influence + self.bonus


def step_rewards(raw: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, cfg: RewardConfig) -> StepRewards:
    """A training step's rewards from its verifier scores, as `reward.*` says.

    Args:
        raw: (B, N, T) verifier scores in [0, 1] (the label verifier's 1/0 with `verifier.kind=label`).
        labels: (B, N, T) ground-truth correctness, 1/0.
        valid: (B, N, T) bool, False where the answer has no parseable final answer (it scores `invalid_penalty`).
        cfg: gamma, alpha, beta, convention, invalid_penalty and incentive_source (`label`: the incentives read
            the ground truth; `verifier`: the verifier's score thresholded at 0.5).

    Returns:
        The influence reward, the incentive bonus and the correctness the bonus was read from.
    """
    scores = apply_validity_penalty(raw, valid, cfg.invalid_penalty)
    correct = labels if cfg.incentive_source == "label" else (raw >= 0.5).to(raw.dtype)
    _check_convention(cfg.convention)
    influence = influence_reward(scores, cfg.gamma)
    bonus = incentives(correct, cfg.alpha, cfg.beta, cfg.convention).to(influence)
    return StepRewards(influence, bonus, correct)
