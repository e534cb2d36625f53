"""Advantage estimators on small hand-computed tensors (expected numbers worked out in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from maporl.advantages import (
    ADVANTAGE_ESTIMATORS,
    compute_advantages,
    gae,
    group_ids_for,
    grpo_advantages,
    masked_mean,
    masked_whiten,
    rloo_advantages,
    token_rewards,
)

NAN, INF = math.nan, math.inf


def close(actual: torch.Tensor, expected: list, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


def test_masked_mean_ignores_garbage():
    x = torch.tensor([[1.0, 2.0, NAN], [3.0, INF, 4.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    close(masked_mean(x, mask), 2.5)  # (1 + 2 + 3 + 4) / 4
    close(masked_mean(x, mask, dim=1), [1.5, 3.5])
    close(masked_mean(x, torch.zeros_like(mask)), 0.0)  # empty selection: 0, not NaN


def test_masked_whiten():
    x = torch.tensor([[1.0, 2.0, NAN], [3.0, INF, 4.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    # valid 1, 2, 3, 4: mean 2.5, population var (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25, std 1.118034
    close(masked_whiten(x, mask), [[-1.341641, -0.447214, 0.0], [0.447214, 0.0, 1.341641]])
    close(masked_whiten(x, mask, shift_mean=False), [[1.158359, 2.052786, 0.0], [2.947214, 0.0, 3.841641]])


def test_gae_one_row_gamma1_lam095():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=0.95)
    # t=2: δ = 1 + 0 − 0.7 = 0.3                       A = 0.3
    # t=1: δ = 0 + 0.7 − 0.6 = 0.1                     A = 0.1 + 0.95·0.3   = 0.385
    # t=0: δ = 0 + 0.6 − 0.5 = 0.1                     A = 0.1 + 0.95·0.385 = 0.46575
    close(adv, [[0.46575, 0.385, 0.3]])
    close(ret, [[0.96575, 0.985, 1.0]])  # A + V


def test_gae_discount():
    # γ = 0.9, λ = 0.5. t=1: δ = 1 − 0.4 = 0.6, A = 0.6. t=0: δ = 0.9·0.4 − 0.2 = 0.16, A = 0.16 + 0.45·0.6 = 0.43
    adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.2, 0.4]]), torch.ones(1, 2), gamma=0.9, lam=0.5)
    close(adv, [[0.43, 0.6]])
    close(ret, [[0.63, 1.0]])


def test_gae_lam1_is_monte_carlo():
    # λ = γ = 1: returns are the undiscounted reward-to-go, whatever the values
    _, ret = gae(torch.tensor([[0.5, 0.0, 1.0]]), torch.tensor([[3.0, -2.0, 7.0]]), torch.ones(1, 3), lam=1.0)
    close(ret, [[1.5, 1.0, 1.0]])


def test_gae_padding_left_and_right_with_garbage():
    # Row 0: left padding; row 1: right padding (and left); the answer is the same 3-token episode as above.
    rewards = torch.tensor([[NAN, 5.0, 0.0, 0.0, 1.0], [9.0, 0.0, 0.0, 1.0, 7.0]])
    values = torch.tensor([[NAN, INF, 0.5, 0.6, 0.7], [9.0, 0.5, 0.6, 0.7, 100.0]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask)
    close(adv, [[0.0, 0.0, 0.46575, 0.385, 0.3], [0.0, 0.46575, 0.385, 0.3, 0.0]])
    close(ret, [[0.0, 0.0, 0.96575, 0.985, 1.0], [0.0, 0.96575, 0.985, 1.0, 0.0]])


def test_gae_is_not_differentiated():
    values = torch.tensor([[0.5, 0.6]], requires_grad=True)
    adv, ret = gae(torch.tensor([[0.0, 1.0]]), values, torch.ones(1, 2))
    assert not adv.requires_grad and not ret.requires_grad


def test_token_rewards_placement():
    final = torch.tensor([2.0, -1.0, 5.0])
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, NAN], [NAN, -1.0, -1.0, -1.0], [NAN, NAN, NAN, NAN]])
    ref = torch.tensor([[-1.5, -2.0, -1.0, NAN], [0.0, -1.0, -0.5, -2.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 0]])
    # row 0: logp − ref = (0.5, 0, 0.5) → −0.1·(…) = (−0.05, 0, −0.05), +2 on its last valid token (index 2)
    # row 1: logp − ref = (0, −0.5, 1)  → (0, 0.05, −0.1), −1 on index 3
    # row 2: no valid token → no reward anywhere
    expected = [[-0.05, 0.0, 1.95, 0.0], [0.0, 0.0, 0.05, -1.1], [0.0, 0.0, 0.0, 0.0]]
    close(token_rewards(final, logprobs, ref, mask, kl_coef=0.1), expected)


# Two groups plus a singleton, interleaved and with arbitrary ids:
#   group 7: rewards 1, 0, 1  (mean 2/3, deviations 1/3, −2/3, 1/3; population var 2/9, std √2/3 = 0.471405)
#   group 2: rewards 0.2, 0.6 (mean 0.4, deviations −0.2, 0.2, std 0.2)
#   group 3: reward 0.5 alone
REWARDS = torch.tensor([1.0, 0.2, 0.0, 0.5, 1.0, 0.6])
IDS = torch.tensor([7, 2, 7, 3, 7, 2])


def test_grpo():
    close(grpo_advantages(REWARDS, IDS), [0.707107, -1.0, -1.414214, 0.0, 0.707107, 1.0])
    close(grpo_advantages(REWARDS, IDS, scale_by_std=False), [1 / 3, -0.2, -2 / 3, 0.0, 1 / 3, 0.2])


def test_grpo_equal_rewards_give_zero_not_nan():
    close(grpo_advantages(torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0, 0, 1])), [0.0, 0.0, 0.0])


def test_rloo():
    # group 7: 1 − mean(0, 1) = 0.5; 0 − mean(1, 1) = −1. group 2: 0.2 − 0.6 = −0.4, 0.6 − 0.2 = 0.4. singleton: 0
    close(rloo_advantages(REWARDS, IDS), [0.5, -0.4, -1.0, 0.0, 0.5, 0.4])


def test_group_shape_mismatch():
    with pytest.raises(ValueError, match="group_ids"):
        rloo_advantages(REWARDS, IDS[:3])


def test_group_ids_for():
    # B = N = T = 2, index = b·4 + i·2 + t, i.e. (b, i, t) = 000 001 010 011 100 101 110 111
    assert group_ids_for(2, 2, 2, "problem").tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert group_ids_for(2, 2, 2, "agent_turn").tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert group_ids_for(2, 2, 2, "problem_turn").tolist() == [0, 1, 0, 1, 2, 3, 2, 3]
    with pytest.raises(ValueError, match="agent_turn"):
        group_ids_for(2, 2, 2, "turn")  # type: ignore[arg-type]


def test_problem_turn_baseline_cancels_team_future_term():
    # The caveat of the module docstring: a term shared by the agents of one (problem, turn) vanishes exactly.
    torch.manual_seed(0)
    own = torch.rand(3, 2, 4)  # (B, N, T)
    team_future = torch.rand(3, 1, 4).expand(3, 2, 4)
    ids = group_ids_for(3, 2, 4, "problem_turn")
    with_future = grpo_advantages((own + team_future).reshape(-1), ids, scale_by_std=False)
    torch.testing.assert_close(with_future, grpo_advantages(own.reshape(-1), ids, scale_by_std=False))


def test_compute_advantages_dispatch():
    assert set(ADVANTAGE_ESTIMATORS) == {"grpo", "grpo_no_std", "rloo"}
    close(compute_advantages("grpo", REWARDS, IDS), [0.707107, -1.0, -1.414214, 0.0, 0.707107, 1.0])
    close(compute_advantages("grpo_no_std", REWARDS, IDS), [1 / 3, -0.2, -2 / 3, 0.0, 1 / 3, 0.2])
    close(compute_advantages("rloo", REWARDS, IDS), [0.5, -0.4, -1.0, 0.0, 0.5, 0.4])
    with pytest.raises(ValueError, match="grpo, grpo_no_std, rloo"):
        compute_advantages("ppo", REWARDS, IDS)
