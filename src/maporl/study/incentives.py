"""How much of the incentive bonus reaches the policy gradient, for the group estimators (grpo, rloo).

An incentive is a reward bonus on one answer; the group baseline subtracts what the other answers of its group
(by default the same problem, agent and turn over the K rollouts) got. Where the event fires in every rollout of a
group the baseline absorbs the bonus whole, and GRPO's division by the group's std rescales whatever is left. These
statistics, logged every step as `incentive_adv/...`, say how much is left (docs/metrics.md):

- `bonus_abs`: mean |bonus| over all answers, in reward units (compare `reward/mean`);
- `kept`: over the answers with a bonus, the mean of (bonus − its group's mean bonus) / bonus: 1 where no other
  rollout of the group got it, 0 where all did (1 with `algo.incentive_placement=advantage`, which adds the bonus
  after the baseline);
- `abs_share`: mean |A(R) − A(R − bonus)| / mean |A(R)|: the share of the advantages' size that the incentives make;
- `<event>` (`corrective/self_fix`, ...): the mean of A(R) − A(R − bonus) over the answers where the event fired,
  in advantage units: what the event changes in the answer's advantage after the baseline.
"""

from __future__ import annotations

import torch

from maporl.advantages import GROUP_ESTIMATORS, group_advantages, group_mean, step_group_ids
from maporl.config import AlgoConfig
from maporl.rewards import Convention, StepRewards, incentive_events


@torch.no_grad()
def incentive_advantage_stats(algo: AlgoConfig, rewards: StepRewards, convention: Convention = "paper") -> dict:
    """The `incentive_adv/...` statistics of one step (see the module docstring).

    Args:
        algo: name, group_by, rollouts_per_problem, incentive_placement.
        rewards: the step's influence reward, incentive bonus and the correctness the bonus was read from.
        convention: the incentives' convention (`reward.convention`), which says where each event fires.

    Returns:
        {metric name: value}; empty for ppo and sft, and when no incentive fired this step.
    """
    if algo.name not in GROUP_ESTIMATORS:
        return {}
    bonus = rewards.bonus
    has = bonus != 0
    if not has.any():
        return {}
    after = algo.incentive_placement == "advantage"  # then nothing is subtracted from the bonus: all of it is kept
    full = group_advantages(algo, rewards.influence, bonus)  # where compute_advantages puts the bonus
    delta = full - group_advantages(algo, rewards.influence)
    mean_bonus = group_mean(bonus.reshape(-1), step_group_ids(algo, bonus.shape)).reshape(bonus.shape)
    out = {
        "incentive_adv/bonus_abs": bonus.abs().mean().item(),
        "incentive_adv/kept": 1.0 if after else ((bonus - mean_bonus)[has] / bonus[has]).mean().item(),
        "incentive_adv/abs_share": (delta.abs().mean() / full.abs().mean().clamp(min=1e-12)).item(),
    }
    for key, fired in incentive_events(rewards.correct, convention).items():
        if fired.any():
            out[f"incentive_adv/{key}"] = delta[fired].mean().item()
    return out
