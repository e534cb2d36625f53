"""The MAPoRL reward on hand-computed numbers: the worked examples of docs/algorithm.md, edge cases, batching,
validity penalty, and the incentive source."""

from __future__ import annotations

import pytest
import torch

from maporl.config import RewardConfig
from maporl.rewards import (
    EVENTS,
    apply_validity_penalty,
    incentive_counts,
    incentives,
    influence_reward,
    maporl_rewards,
    peers_state,
    step_rewards,
)

ATOL = 1e-5
W = {"alpha": (1.0, 2.0), "beta": (3.0, 4.0)}


def team(*agents: tuple[float, ...]) -> torch.Tensor:
    """One problem: per-agent sequences over turns -> (1, N, T)."""
    return torch.tensor([list(a) for a in agents], dtype=torch.float64)[None]


def turns(*rows: list[float]) -> torch.Tensor:
    """Expected rewards listed per turn as [A, B, ...] (the layout of docs/algorithm.md) -> (1, N, T)."""
    return torch.tensor(rows, dtype=torch.float64).T[None]


# The worked examples of docs/algorithm.md: N = 2, T = 3, γ = 0.3.
# (scores, correct, weights, {convention: expected per turn})
EX1 = (team((0.2, 0.8, 0.85), (0.9, 0.9, 0.95)), team((0, 1, 1), (1, 1, 1)))
VECTORS = {
    "ex1": (
        *EX1,
        {"alpha": (0.0, 0.0), "beta": (0.0, 0.0)},
        {c: turns([0.385612, 0.889209], [0.823077, 0.9], [0.85, 0.95]) for c in ("paper", "official")},
    ),
    "ex2": (
        *EX1,
        W,
        {
            "official": turns([0.385612, 0.889209], [1.823077, 0.9], [0.85, 0.95]),
            "paper": turns([0.385612, 4.889209], [1.823077, 0.9], [0.85, 0.95]),
        },
    ),
    "ex3": (
        team((1, 1, 1), (0, -10, 1)),
        team((1, 1, 1), (0, 0, 1)),
        W,
        {
            "official": turns([-0.18705, -0.906475], [-3.0, -7.461538], [1.0, 2.0]),
            "paper": turns([-0.18705, -0.906475], [5.0, -7.461538], [1.0, 2.0]),
        },
    ),
    "ex4": (
        team((1, 0, 0), (1, 1, 0)),
        team((1, 0, 0), (1, 1, 0)),
        W,
        {
            "official": turns([0.827338, 0.827338], [2.0, 0.769231], [0.0, -0.999]),
            "paper": turns([0.827338, -2.172662], [-6.0, 0.769231], [0.0, -1.0]),
        },
    ),
}


@pytest.mark.parametrize("convention", ["paper", "official"])
@pytest.mark.parametrize("name", sorted(VECTORS))
def test_design_vectors(name, convention):
    scores, correct, weights, expected = VECTORS[name]
    got = maporl_rewards(scores, correct.bool(), gamma=0.3, convention=convention, **weights)
    torch.testing.assert_close(got, expected[convention], atol=ATOL, rtol=0)


def test_exactly_half_the_peers_right_is_neither():
    # N = 3, T = 2, γ = 0.3. A goes wrong→right while its peers at t=0 are B right, C wrong: peer mean 0.5, neither
    # right nor wrong, so no corrective term. A's and C's peers are split at t=0, B's at t=1: no persuasive term fires.
    scores = team((0, 1), (1, 1), (0, 0))
    half = maporl_rewards(scores, scores.bool(), gamma=0.3, **W)
    # team mean at t=1 is 2/3: R(0,A) = (0 + 0.3·2/3) / 1.3, R(0,B) = (1 + 0.2) / 1.3.
    torch.testing.assert_close(half, turns([0.2 / 1.3, 1.2 / 1.3, 0.2 / 1.3], [1, 1, 0]), atol=ATOL, rtol=0)
    right, wrong = peers_state(scores.bool())
    assert not right[0, 0, 0] and not wrong[0, 0, 0]
    # Contrast: with C right at t=0 too, A's peers are right (mean 1), so A adopted a correct answer: +α0 = 1.
    scores = team((0, 1), (1, 1), (1, 1))
    both = maporl_rewards(scores, scores.bool(), gamma=0.3, **W)
    torch.testing.assert_close(both, turns([0.3 / 1.3, 1.0, 1.0], [2.0, 1.0, 1.0]), atol=ATOL, rtol=0)


def test_three_agents_two_turns_incentives():
    # A (1,0), B (0,1), C (0,1); γ = 0.3, α = (1,2), β = (3,4).
    # t=0, A: its peers B, C go wrong (mean 0) → right (mean 1) while A is right: persuaded, paper +β1 = +4.
    #      B, C: peers split 1/0 at t=0 → neither, no persuasive term.
    # t=1, A: right→wrong with peers wrong at t=0: talked into a wrong answer, −α0 = −1.
    #      B, C: wrong→right, but peers split at t=0 → no corrective term.
    scores = team((1, 0), (0, 1), (0, 1))
    correct = scores.bool()
    torch.testing.assert_close(incentives(correct, **W), turns([4, 0, 0], [-1, 0, 0]).float(), atol=0, rtol=0)
    # Official: no incentive at t=0, persuasive only on middle turns (none when T=2), and −1 nudged to −0.999.
    torch.testing.assert_close(
        incentives(correct, **W, convention="official"), turns([0, 0, 0], [-0.999, 0, 0]).float(), atol=0, rtol=0
    )
    r_inf = turns([1.2 / 1.3, 0.2 / 1.3, 0.2 / 1.3], [0, 1, 1])
    got = maporl_rewards(scores, correct, gamma=0.3, **W)
    torch.testing.assert_close(got, r_inf + turns([4, 0, 0], [-1, 0, 0]), atol=ATOL, rtol=0)


def test_official_nudge_applies_to_the_running_bonus_only():
    # Ex4 with B's last score 0.2 instead of 0: B's bonus at t=2 is −α0 = −1 → −0.999, added to R_inf = 0.2.
    scores, correct = team((1, 0, 0), (1, 1, 0.2)), team((1, 0, 0), (1, 1, 0)).bool()
    official = maporl_rewards(scores, correct, gamma=0.3, convention="official", **W)
    paper = maporl_rewards(scores, correct, gamma=0.3, **W)
    assert official[0, 1, 2].item() == pytest.approx(0.2 - 0.999)
    assert paper[0, 1, 2].item() == pytest.approx(0.2 - 1.0)
    # A at t=1 in Ex4 with β1 = 1: broke alone −α1 = −2, then official (inverted) misled +β1 = +1 → −1 → −0.999.
    bonus = incentives(correct, (1.0, 2.0), (3.0, 1.0), "official")
    assert bonus[0, 0, 1].item() == pytest.approx(-0.999)
    assert incentives(correct, (1.0, 2.0), (3.0, 1.0))[0, 0, 1].item() == pytest.approx(-3.0)
    # A reward of exactly −1 coming from the scores is not a bonus and is left alone.
    minus_one = maporl_rewards(-torch.ones(1, 2, 1), torch.zeros(1, 2, 1), gamma=0.3, convention="official", **W)
    assert torch.equal(minus_one, -torch.ones(1, 2, 1))


@pytest.mark.parametrize("convention", ["paper", "official"])
def test_single_agent(convention):
    # N = 1, γ = 0.3: the team mean is the agent itself; with no peers a change is made alone, so α1 applies.
    scores, correct = team((0.2, 0.9, 0.1)), team((0, 1, 0)).bool()
    got = maporl_rewards(scores, correct, gamma=0.3, convention=convention, **W)
    r_inf = [(0.2 + 0.3 * 0.9 + 0.09 * 0.1) / 1.39, (0.9 + 0.3 * 0.1) / 1.3, 0.1]
    torch.testing.assert_close(got, turns([r_inf[0]], [r_inf[1] + 2], [r_inf[2] - 2]), atol=ATOL, rtol=0)
    right, wrong = peers_state(correct)
    assert not right.any() and not wrong.any()


@pytest.mark.parametrize("convention", ["paper", "official"])
def test_single_turn_reward_is_the_score(convention):
    scores = torch.rand(5, 3, 1, dtype=torch.float64)
    got = maporl_rewards(scores, scores > 0.5, gamma=0.3, convention=convention, **W)
    assert torch.equal(got, scores)


def test_gamma_zero_is_the_score():
    scores = torch.rand(4, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(influence_reward(scores, 0.0), scores, atol=0, rtol=0)
    zero = {"alpha": (0.0, 0.0), "beta": (0.0, 0.0)}
    torch.testing.assert_close(maporl_rewards(scores, scores > 0.5, gamma=0.0, **zero), scores, atol=0, rtol=0)


@pytest.mark.parametrize("convention", ["paper", "official"])
def test_batch_is_independent_and_permutes(convention):
    scores = torch.cat([v[0] for v in VECTORS.values()])
    correct = torch.cat([v[1] for v in VECTORS.values()]).bool()
    batched = maporl_rewards(scores, correct, gamma=0.3, convention=convention, **W)
    for b in range(4):
        alone = maporl_rewards(scores[b : b + 1], correct[b : b + 1], gamma=0.3, convention=convention, **W)
        torch.testing.assert_close(batched[b : b + 1], alone, atol=0, rtol=0)
    perm = torch.tensor([2, 0, 3, 1])
    permuted = maporl_rewards(scores[perm], correct[perm], gamma=0.3, convention=convention, **W)
    torch.testing.assert_close(permuted, batched[perm], atol=0, rtol=0)
    # Ex3 and Ex4 use exactly these weights, so their worked vectors hold inside the batch too.
    torch.testing.assert_close(batched[2:3], VECTORS["ex3"][3][convention], atol=ATOL, rtol=0)
    torch.testing.assert_close(batched[3:4], VECTORS["ex4"][3][convention], atol=ATOL, rtol=0)


def test_validity_penalty_reaches_earlier_turns():
    # N = 2, T = 2, γ = 0.5: B's answer at t=1 is invalid → −10. Team mean at t=1 drops from 0.75 to −4.5.
    raw, valid = team((1, 1), (1, 0.5)), team((1, 1), (1, 0)).bool()
    scores = apply_validity_penalty(raw, valid, -10.0)
    torch.testing.assert_close(scores, team((1, 1), (1, -10)), atol=0, rtol=0)
    got = influence_reward(scores, 0.5)
    # R(0,·) = (1 + 0.5·(−4.5)) / 1.5 for both agents; before the penalty it was (1 + 0.5·0.75) / 1.5.
    torch.testing.assert_close(got, turns([-1.25 / 1.5, -1.25 / 1.5], [1, -10]), atol=ATOL, rtol=0)
    assert influence_reward(raw, 0.5)[0, 0, 0].item() == pytest.approx(1.375 / 1.5)


def test_shape_errors():
    good = torch.zeros(2, 2, 3)
    with pytest.raises(ValueError, match=r"scores must be shaped \(B, N, T\)"):
        maporl_rewards(torch.zeros(2, 3), torch.zeros(2, 3), gamma=0.3, **W)
    with pytest.raises(ValueError, match="correct must be shaped"):
        maporl_rewards(good, torch.zeros(2, 2, 3, 1), gamma=0.3, **W)
    with pytest.raises(ValueError, match="they must match"):
        maporl_rewards(good, torch.zeros(2, 3, 3), gamma=0.3, **W)
    with pytest.raises(ValueError, match="convention must be"):
        maporl_rewards(good, good, gamma=0.3, convention="nope", **W)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="they must match"):
        apply_validity_penalty(good, torch.ones(2, 2, 2, dtype=torch.bool), -10.0)
    with pytest.raises(ValueError, match="scores must be shaped"):
        influence_reward(torch.zeros(3), 0.3)
    with pytest.raises(ValueError, match="correct must be shaped"):
        incentive_counts(torch.zeros(2, 3))


def test_incentive_counts():
    # Ex4 (6 slots): B t=0 peers right→wrong while B right; A t=1 broke alone and misled B; B t=2 talked into wrong.
    correct = team((1, 0, 0), (1, 1, 0)).bool()
    expected = dict.fromkeys(EVENTS, 0.0)
    expected |= {
        "persuasive/peers_broke_anyway": 1 / 6,
        "corrective/broke_alone": 1 / 6,
        "persuasive/misled": 1 / 6,
        "corrective/talked_into_wrong": 1 / 6,
    }
    assert incentive_counts(correct) == pytest.approx(expected)
    # Official drops the turn-0 persuasive event.
    assert incentive_counts(correct, "official") == pytest.approx(expected | {"persuasive/peers_broke_anyway": 0.0})
    # Ex2's correctness: A adopts B's right answer at t=1; at t=0 A's wrong→right move counts as persuaded for B.
    counts = incentive_counts(team((0, 1, 1), (1, 1, 1)).bool())
    assert counts == pytest.approx(
        dict.fromkeys(EVENTS, 0.0) | {"corrective/adopt": 1 / 6, "persuasive/persuaded": 1 / 6}
    )


def test_incentive_source_verifier_reads_the_thresholded_score_not_the_label():
    # N = 2 (A, B), T = 2, γ = 0.5, α = (1, 2), β = (3, 4). The verifier is wrong about every answer:
    raw = team((0.9, 0.2), (0.4, 0.8))  # verifier scores: thresholded at 0.5, A (1, 0), B (0, 1)
    labels = team((0, 1), (1, 0))  # the truth: A (0, 1), B (1, 0)
    valid = torch.ones_like(raw, dtype=torch.bool)
    # Influence term from the scores either way: D(0) = 1.5, D(1) = 1; mean score at turn 1 = 0.5.
    # R_inf(0) = ((0.9 + 0.5·0.5) / 1.5, (0.4 + 0.25) / 1.5) = (0.766667, 0.433333); R_inf(1) = (0.2, 0.8).
    # From the verifier: A right→wrong with its peer wrong at 0 (talked into it, −α0 = −1); B wrong→right with its
    # peer right at 0 (adopted, +α0 = +1). At t = 0, A right and its peer goes wrong→right (persuaded, +β1 = +4);
    # B wrong and its peer goes right→wrong (misled, −β1 = −4).
    # From the labels every event is mirrored: A adopts (+1), B is talked into it (−1), A misled (−4), B persuaded
    # (+4).
    cfg = RewardConfig(gamma=0.5, alpha=(1.0, 2.0), beta=(3.0, 4.0), incentive_source="verifier")
    out = step_rewards(raw, labels, valid, cfg)
    rewards, correct = out.total, out.correct
    # The two parts apart: the bonus alone is the incentive of the verifier's correctness (A −1, +4; B +1, −4).
    assert out.bonus.tolist() == [[[4.0, -1.0], [-4.0, 1.0]]]
    assert correct.tolist() == [[[1.0, 0.0], [0.0, 1.0]]]
    torch.testing.assert_close(rewards, turns([4.766667, -3.566667], [-0.8, 1.8]), atol=ATOL, rtol=0)
    label_cfg = RewardConfig(gamma=0.5, alpha=(1.0, 2.0), beta=(3.0, 4.0), incentive_source="label")
    out = step_rewards(raw, labels, valid, label_cfg)
    rewards, correct = out.total, out.correct
    assert torch.equal(correct, labels)
    torch.testing.assert_close(rewards, turns([-3.233333, 4.433333], [1.2, -0.2]), atol=ATOL, rtol=0)
    # An invalid answer scores the penalty, whatever the verifier said (B at turn 1 here): R_inf changes, not c.
    valid[0, 1, 1] = False
    rewards = step_rewards(raw, labels, valid, cfg).total
    # mean score at turn 1 = (0.2 − 0.5) / 2 = −0.15: R_inf(0) = ((0.9 − 0.075) / 1.5, (0.4 − 0.075) / 1.5)
    torch.testing.assert_close(rewards, turns([0.55 + 4, 0.216667 - 4], [-0.8, -0.5 + 1]), atol=ATOL, rtol=0)
