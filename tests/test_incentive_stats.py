"""What the incentives add to the advantages after the group baseline, worked by hand on one problem, two rollouts,
two agents and two turns."""

from __future__ import annotations

import pytest
import torch

from maporl.config import AlgoConfig, RewardConfig
from maporl.rewards import StepRewards, incentives
from maporl.study.incentives import incentive_advantage_stats

ALPHA1 = RewardConfig(alpha=(0.0, 2.0), beta=(0.0, 0.0))  # the paper's α1 = 2 arm


def case(second_rollout_fixes_too: bool) -> StepRewards:
    """Rollout 0: agent 0 wrong→right while agent 1 stays wrong (agent 0 self-fixes: +α1 on (r0, a0, t1); agent 1 at
    t0 sees its peer go wrong→right while itself wrong: peers_fixed_anyway, weight β0 = 0). Rollout 1: the same or
    all wrong. The influence part of every reward is 0.5, so only the bonus differs within a group."""
    r0 = [[0.0, 1.0], [0.0, 0.0]]
    correct = torch.tensor([r0, r0 if second_rollout_fixes_too else [[0.0, 0.0], [0.0, 0.0]]])
    bonus = incentives(correct, ALPHA1.alpha, ALPHA1.beta)
    return StepRewards(torch.full_like(bonus, 0.5), bonus, correct)


def test_a_bonus_only_one_rollout_got_survives_the_baseline():
    rewards = case(second_rollout_fixes_too=False)
    assert rewards.total[0, 0, 1] == 2.5 and rewards.total.sum() == 8 * 0.5 + 2
    stats = incentive_advantage_stats(AlgoConfig(name="rloo", rollouts_per_problem=2), rewards)
    # Group (a0, t1) over the two rollouts: rewards 2.5, 0.5 -> RLOO 2, -2; without the bonus 0.5, 0.5 -> 0, 0. Every
    # other group is constant (advantage 0). Its group's mean bonus is 1: (2 - 1) / 2 of the bonus is kept.
    assert stats == pytest.approx({
        "incentive_adv/bonus_abs": 2 / 8,
        "incentive_adv/kept": 0.5,
        "incentive_adv/abs_share": 1.0,  # |delta| and |A| both 4 / 8: all of the advantage comes from the bonus
        "incentive_adv/corrective/self_fix": 2.0,
        "incentive_adv/persuasive/peers_fixed_anyway": 0.0,
    })  # fmt: skip
    # GRPO divides the centred group (1, -1) by its sample std √2: the self-fix adds 1/√2 to the advantage.
    grpo = incentive_advantage_stats(AlgoConfig(name="grpo", rollouts_per_problem=2), rewards)
    assert grpo["incentive_adv/corrective/self_fix"] == pytest.approx(2**-0.5, abs=1e-5)


def test_a_bonus_every_rollout_got_is_absorbed():
    rewards = case(second_rollout_fixes_too=True)
    stats = incentive_advantage_stats(AlgoConfig(name="rloo", rollouts_per_problem=2), rewards)
    assert stats["incentive_adv/kept"] == 0.0 and stats["incentive_adv/corrective/self_fix"] == 0.0
    assert stats["incentive_adv/abs_share"] == 0.0 and stats["incentive_adv/bonus_abs"] == pytest.approx(4 / 8)


def test_nothing_to_report_without_a_group_baseline_or_a_bonus():
    rewards = case(second_rollout_fixes_too=False)
    assert incentive_advantage_stats(AlgoConfig(name="ppo"), rewards) == {}
    none = StepRewards(rewards.influence, torch.zeros_like(rewards.bonus), rewards.correct)
    assert incentive_advantage_stats(AlgoConfig(name="grpo", rollouts_per_problem=2), none) == {}


def test_incentives_placed_after_the_baseline_reach_the_advantage_whole():
    """algo.incentive_placement=advantage: the estimator sees R_inf (here constant in every group: advantages
    0) and the bonus is added after it, so the self-fix's advantage is its α1 = 2 under RLOO and GRPO alike."""
    from maporl.advantages import group_advantages

    rewards = case(second_rollout_fixes_too=False)
    influence, bonus = rewards.influence, rewards.bonus
    for name in ("rloo", "grpo"):
        algo = AlgoConfig(name=name, rollouts_per_problem=2, incentive_placement="advantage")
        assert torch.equal(group_advantages(algo, influence, bonus), bonus)
        stats = incentive_advantage_stats(algo, rewards)
        assert stats["incentive_adv/corrective/self_fix"] == pytest.approx(2.0)
        assert stats["incentive_adv/kept"] == 1.0 and stats["incentive_adv/abs_share"] == pytest.approx(1.0)
    placed_in_reward = AlgoConfig(name="rloo", rollouts_per_problem=2)
    assert group_advantages(placed_in_reward, influence, bonus)[:, 0, 1].tolist() == [2.0, -2.0]  # 2.5 vs 0.5


def test_incentive_placement_after_the_baseline_needs_a_group_estimator():
    from maporl.config import load_config
    from maporl.errors import UsageError

    with pytest.raises(UsageError, match="incentive_placement=advantage adds the incentives after a group baseline"):
        load_config(None, ["algo.name=ppo", "algo.incentive_placement=advantage"])
