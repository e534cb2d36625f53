"""Advantage estimators on small hand-computed tensors (expected numbers worked out in the comments), and the one
entry point the trainer calls (`compute_advantages`) for every algorithm and grouping."""

from __future__ import annotations

import math

import pytest
import torch

from maporl.advantages import (
    compute_advantages,
    gae,
    group_ids,
    grpo_advantages,
    masked_mean,
    masked_whiten,
    rloo_advantages,
    token_rewards,
    whiten,
)
from maporl.config import AlgoConfig
from maporl.records import EpisodeBatch

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
#   group 7: rewards 1, 0, 1  (mean 2/3, deviations 1/3, −2/3, 1/3; sample var (6/9) / 2 = 1/3, std 0.577350)
#   group 2: rewards 0.2, 0.6 (mean 0.4, deviations −0.2, 0.2; sample var 0.08 / 1, std 0.282843)
#   group 3: reward 0.5 alone
REWARDS = torch.tensor([1.0, 0.2, 0.0, 0.5, 1.0, 0.6])
IDS = torch.tensor([7, 2, 7, 3, 7, 2])


def test_grpo():
    # GRPO divides by the Bessel-corrected std (n − 1), as TRL's GRPOTrainer and verl do; 0 for the singleton.
    close(grpo_advantages(REWARDS, IDS), [0.577350, -0.707107, -1.154701, 0.0, 0.577350, 0.707107])


def test_grpo_equal_rewards_give_zero_not_nan():
    close(grpo_advantages(torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0, 0, 1])), [0.0, 0.0, 0.0])


def test_rloo():
    # group 7: 1 − mean(0, 1) = 0.5; 0 − mean(1, 1) = −1. group 2: 0.2 − 0.6 = −0.4, 0.6 − 0.2 = 0.4. singleton: 0
    close(rloo_advantages(REWARDS, IDS), [0.5, -0.4, -1.0, 0.0, 0.5, 0.4])


def test_group_shape_mismatch():
    with pytest.raises(ValueError, match="group_ids"):
        rloo_advantages(REWARDS, IDS[:3])


def test_group_ids_every_layout():
    # 2 problems x K = 2 rollouts = 4 discussions b, N = 2, T = 2; index = b·4 + i·2 + t, problem p = b // 2.
    ids = {by: group_ids(by, 2, 2, 2, 2).reshape(4, 2, 2).tolist() for by in ("rollout", "problem", "agent_turn")}
    # rollout: (p, i, t) -> (p·2 + i)·2 + t; the two rollouts of a problem share their groups
    assert ids["rollout"] == [[[0, 1], [2, 3]], [[0, 1], [2, 3]], [[4, 5], [6, 7]], [[4, 5], [6, 7]]]
    assert ids["problem"] == [[[0, 0], [0, 0]], [[0, 0], [0, 0]], [[1, 1], [1, 1]], [[1, 1], [1, 1]]]
    assert ids["agent_turn"] == [[[0, 1], [2, 3]]] * 4  # the same slot in every discussion of the step
    # problem_turn: p·2 + t, whatever the agent
    assert group_ids("problem_turn", 2, 2, 2, 2).tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3]
    with pytest.raises(ValueError, match="agent_turn"):
        group_ids("turn", 2, 1, 2, 2)  # type: ignore[arg-type]


def episodes_of(index: list[tuple[int, int, int]], mask: list[list[int]]) -> EpisodeBatch:
    """Episodes (b, i, t) with an answer mask; the token ids do not matter to advantages."""
    rows = torch.tensor(index)
    answer = torch.tensor(mask, dtype=torch.bool)
    ids = torch.zeros(len(index), answer.shape[1] + 1, dtype=torch.long)
    return EpisodeBatch(ids, torch.ones_like(ids), answer, rows[:, 1], rows[:, 2], rows[:, 0])


ALL = [(b, i, t) for b in range(4) for i in range(2) for t in range(2)]  # every answer, in (b, i, t) order


def test_group_estimators_through_the_entry_point_by_grouping():
    # 2 problems x 2 rollouts, N = 2, T = 2. Rewards R[b, i, t]:
    rewards = torch.tensor(
        [[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]], [[2.0, 2.0], [0.0, 2.0]], [[0.0] * 2] * 2]
    )
    mask = [[1, 1]] * len(ALL)
    got = {}
    for by in ("rollout", "problem", "problem_turn"):
        cfg = AlgoConfig(name="rloo", group_by=by, rollouts_per_problem=2)
        adv, returns = compute_advantages(cfg, rewards, episodes_of(ALL, mask))
        assert returns is None and torch.equal(adv[:, 0], adv[:, 1])  # one value per episode, on every token
        got[by] = adv[:, 0].reshape(4, 2, 2)
    # rollout, RLOO with 2 members: A = R − the other rollout's R of the same (problem, agent, turn).
    close(got["rollout"], [[[1, -1], [-1, -1]], [[-1, 1], [1, 1]], [[2, 2], [0, 2]], [[-2, -2], [0, -2]]])
    # problem: 8 answers per problem; problem 0 sums to 4, so A = R − (4 − R)/7; problem 1 sums to 6: R − (6 − R)/7
    p0 = [[[1 - 3 / 7, -4 / 7], [-4 / 7, -4 / 7]], [[-4 / 7, 1 - 3 / 7], [1 - 3 / 7, 1 - 3 / 7]]]
    p1 = [[[2 - 4 / 7, 2 - 4 / 7], [-6 / 7, 2 - 4 / 7]], [[-6 / 7, -6 / 7], [-6 / 7, -6 / 7]]]
    close(got["problem"], p0 + p1)
    # problem_turn: 4 answers per (problem, turn), A = R − mean of the other 3. Problem 0, turn 0: R = 1, 0, 0, 1
    # (b0 i0, b0 i1, b1 i0, b1 i1) -> 1 − 1/3, 0 − 2/3, 0 − 2/3, 1 − 1/3; turn 1: 0, 0, 1, 1 -> −2/3, −2/3, 2/3, 2/3.
    # Problem 1, turn 0: 2, 0, 0, 0 -> 2, −2/3, −2/3, −2/3; turn 1: 2, 2, 0, 0 -> 4/3, 4/3, −4/3, −4/3.
    expected = [
        [[2 / 3, -2 / 3], [-2 / 3, -2 / 3]],
        [[-2 / 3, 2 / 3], [2 / 3, 2 / 3]],
        [[2, 4 / 3], [-2 / 3, 4 / 3]],
        [[-2 / 3, -4 / 3], [-2 / 3, -4 / 3]],
    ]
    close(got["problem_turn"], expected)


def test_group_baselines_count_untrained_answers_and_mask_padding():
    # Only agent 0's turn-1 answers are trained, but the group (problem) spans every answer of the problem.
    rewards = torch.tensor([[[1.0, 3.0], [0.0, 0.0]]])  # B = 1 (K = 1), N = 2, T = 2; group mean 1, std √(6/3)
    cfg = AlgoConfig(name="grpo", group_by="problem", rollouts_per_problem=1)
    adv, _ = compute_advantages(cfg, rewards, episodes_of([(0, 0, 1)], [[0, 1, 1]]))
    close(adv, [[0.0, 1.414214, 1.414214]])  # (3 − 1) / 1.414214; 0 on the padding position


def test_problem_turn_baseline_cancels_team_future_term():
    # The caveat of the module docstring, on the grouping the trainer uses: a term shared by the agents of one
    # (problem, turn) vanishes exactly, over the K rollouts of each problem too.
    torch.manual_seed(0)
    own = torch.rand(3 * 2, 2, 4)  # (B = 3 problems x K = 2, N, T)
    team_future = torch.rand(3, 1, 4).repeat_interleave(2, 0).expand(6, 2, 4)
    cfg = AlgoConfig(name="grpo", group_by="problem_turn", rollouts_per_problem=2)
    everything = episodes_of([(b, i, t) for b in range(6) for i in range(2) for t in range(4)], [[1]] * 48)
    with_future, _ = compute_advantages(cfg, own + team_future, everything)
    without, _ = compute_advantages(cfg, own, everything)
    torch.testing.assert_close(with_future, without)
    rollout, _ = compute_advantages(AlgoConfig(name="grpo", rollouts_per_problem=2), own + team_future, everything)
    assert not torch.allclose(rollout, without)  # the default grouping keeps it


def test_sft_advantage_is_one_on_answer_tokens():
    adv, returns = compute_advantages(AlgoConfig(name="sft"), torch.zeros(1, 1, 1), episodes_of([(0, 0, 0)], [[0, 1]]))
    close(adv, [[0.0, 1.0]])
    assert returns is None


def test_ppo_path_token_rewards_gae_then_whitening_per_agent_and_turn():
    # Episodes (b, i, t): e0 (0, 0, 0), e1 (1, 0, 0), e2 (0, 1, 0), e3 (1, 1, 0); e3 is a one-token answer after
    # left padding. Rewards R: 1, −1, 0.5, −0.5. kl_coef 0.1, λ 0.5, values 0 (garbage at the padding position).
    rewards = torch.tensor([[[1.0], [0.5]], [[-1.0], [-0.5]]])  # (B, N, T)
    batch = episodes_of([(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)], [[1, 1], [1, 1], [1, 1], [0, 1]])
    old = torch.tensor([[-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0], [NAN, -1.0]])
    ref = torch.tensor(
        [[-1.0, -1.0], [-1.0, -1.0], [-2.0, -1.0], [NAN, -1.0]]
    )  # e2's first token: log π − log π_ref = 1
    values = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [INF, 0.0]])
    cfg = AlgoConfig(name="ppo", kl_coef=0.1, gae_lambda=0.5, whiten="agent_turn")
    adv, returns = compute_advantages(cfg, rewards, batch, old, values, ref)
    # Token rewards: e0 (0, 1), e1 (0, −1), e2 (−0.1·1, 0.5), e3 (–, −0.5).
    # GAE with V = 0, γ = 1: A_last = r_last, A_0 = r_0 + 0.5·A_1:
    # e0 (0.5, 1), e1 (−0.5, −1), e2 (0.15, 0.5), e3 (–, −0.5)
    close(returns, [[0.5, 1.0], [-0.5, -1.0], [0.15, 0.5], [0.0, -0.5]])  # returns = A + V, before whitening
    # Whitening per (agent, turn). Agent 0: 0.5, 1, −0.5, −1: mean 0, population std √0.625 = 0.790569.
    # Agent 1: 0.15, 0.5, −0.5: mean 0.05, deviations 0.1, 0.45, −0.55, std √(0.515 / 3) = 0.414327.
    expected = [[0.632456, 1.264911], [-0.632456, -1.264911], [0.241355, 1.086099], [0.0, -1.327455]]
    close(adv, expected)
    # Whitening over the whole batch mixes the two agents' scales instead: the same 7 values, mean 0.0214.
    batch_adv, _ = compute_advantages(
        AlgoConfig(name="ppo", kl_coef=0.1, gae_lambda=0.5, whiten="batch"), rewards, batch, old, values, ref
    )
    close(batch_adv, masked_whiten(returns, batch.answer_mask).tolist())
    none, _ = compute_advantages(
        AlgoConfig(name="ppo", kl_coef=0.1, gae_lambda=0.5, whiten="none"), rewards, batch, old, values, ref
    )
    close(none, returns.tolist())


def test_whiten_leaves_a_one_token_group_alone():
    adv = torch.tensor([[3.0, 0.0], [1.0, 2.0]])
    mask = torch.tensor([[1, 0], [1, 1]])
    out = whiten(adv, mask, agent=torch.tensor([0, 1]), turn=torch.tensor([0, 0]), how="agent_turn")
    close(out, [[3.0, 0.0], [-1.0, 1.0]])  # agent 0 has one token: unchanged; agent 1: mean 1.5, std 0.5


def test_compute_advantages_needs_what_ppo_needs_and_a_known_name():
    batch = episodes_of([(0, 0, 0)], [[1]])
    with pytest.raises(ValueError, match="log-probabilities and values"):
        compute_advantages(AlgoConfig(name="ppo"), torch.zeros(1, 1, 1), batch)
    with pytest.raises(ValueError, match="unknown algorithm"):
        compute_advantages(AlgoConfig(name="reinforce"), torch.zeros(1, 1, 1), batch)  # type: ignore[arg-type]
