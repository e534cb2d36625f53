"""What the incentives add to the advantages after the group baseline, worked by hand on one problem, two rollouts,
two agents and two turns."""

from __future__ import annotations

import pytest
import torch

from maporl.config import AlgoConfig, RewardConfig
from maporl.incentive_stats import incentive_advantage_stats
from maporl.rewards import incentives

ALPHA1 = RewardConfig(alpha=(0.0, 2.0), beta=(0.0, 0.0))  # the paper's α1 = 2 arm


def case(second_rollout_fixes_too: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rollout 0: agent 0 wrong→right while agent 1 stays wrong (agent 0 self-fixes: +α1 on (r0, a0, t1); agent 1 at
    t0 sees its peer go wrong→right while itself wrong: peers_fixed_anyway, weight β0 = 0). Rollout 1: the same or
    all wrong. The influence part of every reward is 0.5, so only the bonus differs within a group."""
    r0 = [[0.0, 1.0], [0.0, 0.0]]
    correct = torch.tensor([r0, r0 if second_rollout_fixes_too else [[0.0, 0.0], [0.0, 0.0]]])
    return 0.5 + incentives(correct, ALPHA1.alpha, ALPHA1.beta), correct


def test_a_bonus_only_one_rollout_got_survives_the_baseline():
    rewards, correct = case(second_rollout_fixes_too=False)
    assert rewards[0, 0, 1] == 2.5 and rewards.sum() == 8 * 0.5 + 2
    stats = incentive_advantage_stats(AlgoConfig(name="rloo", rollouts_per_problem=2), ALPHA1, rewards, correct)
    # Group (a0, t1) over the two rollouts: rewards 2.5, 0.5 -> RLOO 2, -2; without the bonus 0.5, 0.5 -> 0, 0. Every
    # other group is constant (advantage 0). Its group's mean bonus is 1: (2 - 1) / 2 of the bonus is kept.
    assert stats == pytest.approx({
        "incentive_adv/bonus_abs": 2 / 8,
        "incentive_adv/kept": 0.5,
        "incentive_adv/abs_share": 1.0,  # |delta| and |A| both 4 / 8: all of the advantage comes from the bonus
        "incentive_adv/corrective/self_fix": 2.0,
        "incentive_adv/persuasive/peers_fixed_anyway": 0.0,
    })  # fmt: skip
    # GRPO divides the centred group (1, -1) by its std 1: the self-fix adds 1 to the advantage.
    grpo = incentive_advantage_stats(AlgoConfig(name="grpo", rollouts_per_problem=2), ALPHA1, rewards, correct)
    assert grpo["incentive_adv/corrective/self_fix"] == pytest.approx(1.0, abs=1e-5)


def test_a_bonus_every_rollout_got_is_absorbed():
    rewards, correct = case(second_rollout_fixes_too=True)
    stats = incentive_advantage_stats(AlgoConfig(name="rloo", rollouts_per_problem=2), ALPHA1, rewards, correct)
    assert stats["incentive_adv/kept"] == 0.0 and stats["incentive_adv/corrective/self_fix"] == 0.0
    assert stats["incentive_adv/abs_share"] == 0.0 and stats["incentive_adv/bonus_abs"] == pytest.approx(4 / 8)


def test_nothing_to_report_without_a_group_baseline_or_a_bonus():
    rewards, correct = case(second_rollout_fixes_too=False)
    assert incentive_advantage_stats(AlgoConfig(name="ppo"), ALPHA1, rewards, correct) == {}
    none = RewardConfig(alpha=(0.0, 0.0), beta=(0.0, 0.0))
    assert incentive_advantage_stats(AlgoConfig(name="grpo", rollouts_per_problem=2), none, rewards, correct) == {}
