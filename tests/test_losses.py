"""Losses on small hand-computed tensors (expected numbers worked out in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from maporl.losses import aggregate, kl_penalty, policy_loss, value_loss

NAN, INF = math.nan, math.inf


def close(actual: torch.Tensor, expected, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


# Ragged: row 0 has 3 valid tokens, row 1 one, row 2 none; garbage where masked out.
LOSS_MAT = torch.tensor([[1.0, 2.0, 3.0], [4.0, NAN, INF], [7.0, 8.0, NAN]])
RAGGED = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])


@pytest.mark.parametrize(
    "agg, expected",
    [
        ("token_mean", 2.5),  # (1 + 2 + 3 + 4) / 4
        ("seq_mean_token_mean", 3.0),  # mean(2, 4); the empty row is left out
        ("seq_mean_token_sum", 5.0),  # mean(6, 4)
    ],
)
def test_aggregate(agg, expected):
    close(aggregate(LOSS_MAT, RAGGED, agg), expected)
    close(aggregate(LOSS_MAT, torch.zeros_like(RAGGED), agg), 0.0)


def test_aggregate_unknown():
    with pytest.raises(ValueError, match="token_mean, seq_mean_token_mean, seq_mean_token_sum"):
        aggregate(LOSS_MAT, RAGGED, "mean")


# One row, old log-probs 0, clip ε = 0.2:
#   ratio  A    −A·ρ   −A·clip(ρ)   max    active
#   1.5   +1   −1.5     −1.2       −1.2   clipped   (already pushed up past 1 + ε: no gradient)
#   1.5   −1   +1.5     +1.2       +1.5   unclipped
#   0.5   +1   −0.5     −0.8       −0.5   unclipped
#   0.5   −1   +0.5     +0.8       +0.8   clipped   (already pushed down past 1 − ε: no gradient)
#   1.1   +2   −2.2     −2.2       −2.2   inside the range
# token mean = (−1.2 + 1.5 − 0.5 + 0.8 − 2.2) / 5 = −0.32; clip_frac = 2/5; ratio_mean = 5.1 / 5 = 1.02
# approx_kl = mean((ρ−1) − log ρ) = (2·0.0945349 + 2·0.1931472 + 0.0046898) / 5 = 0.1160108
RATIOS = [1.5, 1.5, 0.5, 0.5, 1.1]
ADV = [1.0, -1.0, 1.0, -1.0, 2.0]


def test_policy_loss_clipping_and_stats():
    logprobs = torch.tensor([RATIOS]).log().requires_grad_()
    loss, stats = policy_loss(logprobs, torch.zeros(1, 5), torch.tensor([ADV]), torch.ones(1, 5), clip_eps=0.2)
    close(loss, -0.32)
    close(stats["clip_frac"], 0.4)
    close(stats["ratio_mean"], 1.02)
    close(stats["approx_kl"], 0.1160108)
    assert all(not v.requires_grad for v in stats.values())


def test_policy_loss_gradient_only_through_unclipped_terms():
    logprobs = torch.tensor([RATIOS]).log().requires_grad_()
    old = torch.zeros(1, 5, requires_grad=True)
    loss, _ = policy_loss(logprobs, old, torch.tensor([ADV]), torch.ones(1, 5))
    loss.backward()
    # d(−A·ρ)/d log π = −A·ρ, divided by the 5 tokens; 0 where the clipped term is active
    close(logprobs.grad, [[0.0, 0.3, -0.1, 0.0, -0.44]])


def test_policy_loss_ignores_nan_at_masked_positions():
    # The same 5 tokens followed by 2 masked-out ones full of garbage: same loss, stats and a finite, zero gradient.
    logprobs = torch.tensor([RATIOS + [NAN, INF]]).log().requires_grad_()
    old = torch.tensor([[0.0] * 5 + [NAN, -INF]])
    adv = torch.tensor([ADV + [NAN, INF]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
    loss, stats = policy_loss(logprobs, old, adv, mask)
    close(loss, -0.32)
    close(stats["clip_frac"], 0.4)
    loss.backward()
    close(logprobs.grad, [[0.0, 0.3, -0.1, 0.0, -0.44, 0.0, 0.0]])


def test_policy_loss_per_episode_advantages_broadcast():
    # ratio 1 everywhere, so each valid token's loss is −A of its row; row 2 has no valid token and a NaN advantage.
    logprobs = torch.zeros(3, 3)
    adv = torch.tensor([1.0, -4.0, NAN])
    loss, stats = policy_loss(logprobs, torch.zeros(3, 3), adv, RAGGED)
    close(loss, 0.25)  # (−1 − 1 − 1 + 4) / 4 valid tokens
    close(stats["clip_frac"], 0.0)
    loss, _ = policy_loss(logprobs, torch.zeros(3, 3), adv, RAGGED, agg="seq_mean_token_mean")
    close(loss, 1.5)  # mean(−1, 4)
    loss, _ = policy_loss(logprobs, torch.zeros(3, 3), adv, RAGGED, agg="seq_mean_token_sum")
    close(loss, 0.5)  # mean(−3, 4)


def test_value_loss_clipping():
    # old values 0, ε = 0.2:
    #   V     G    (V−G)²   clip(V)  (clip−G)²   0.5·max   d/dV (÷4 tokens)
    #   0.5   1    0.25     0.2      0.64        0.32      0      (clipped term active, no gradient)
    #   0.1   1    0.81     0.1      0.81        0.405     −0.9/4 (inside the range)
    #  −0.5   0    0.25    −0.2      0.04        0.125     −0.5/4 (unclipped term active)
    #   0.3   0.3  0        0.2      0.01        0.005     0      (clipped term active)
    # token mean = 0.855 / 4 = 0.21375
    values = torch.tensor([[0.5, 0.1, -0.5, 0.3, NAN]], requires_grad=True)
    returns = torch.tensor([[1.0, 1.0, 0.0, 0.3, INF]])
    old = torch.tensor([[0.0, 0.0, 0.0, 0.0, NAN]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss = value_loss(values, old, returns, mask, clip_eps=0.2)
    close(loss, 0.21375)
    loss.backward()
    close(values.grad, [[0.0, -0.225, -0.125, 0.0, 0.0]])


def test_kl_estimators_at_a_known_point():
    # π = 0.5, π_ref = 0.25: x = log π_ref − log π = −log 2 = −0.693147
    logprobs, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    close(kl_penalty(logprobs, ref, "k1"), [[0.693147]])  # −x
    close(kl_penalty(logprobs, ref, "k2"), [[0.240227]])  # x²/2
    close(kl_penalty(logprobs, ref, "k3"), [[0.193147]])  # eˣ − x − 1 = 0.5 + 0.693147 − 1
    for kind in ("k1", "k2", "k3"):
        close(kl_penalty(ref, ref, kind), [[0.0]])
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_penalty(logprobs, ref, "k4")


def test_kl_estimators_are_unbiased_and_k3_nonnegative():
    # p = (0.5, 0.3, 0.2), q = (0.2, 0.3, 0.5): KL(p‖q) = 0.5·ln 2.5 + 0.2·ln 0.4 = 0.3·ln 2.5 = 0.274887
    p, q = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.3, 0.5])
    tokens = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logprobs, ref = p.log()[tokens][None], q.log()[tokens][None]
    k3 = kl_penalty(logprobs, ref, "k3")
    assert (k3 >= 0).all()
    assert abs(kl_penalty(logprobs, ref, "k1").mean().item() - 0.274887) < 0.01
    assert abs(k3.mean().item() - 0.274887) < 0.01


def test_kl_penalty_mask_keeps_gradient_finite():
    logprobs = torch.tensor([[-1.0, NAN]], requires_grad=True)
    ref = torch.tensor([[-1.5, NAN]])
    mask = torch.tensor([[1, 0]])
    kl = kl_penalty(logprobs, ref, "k3", mask=mask)
    close(kl.detach(), [[math.exp(-0.5) + 0.5 - 1, 0.0]])
    aggregate(kl, mask, "token_mean").backward()
    close(logprobs.grad, [[1 - math.exp(-0.5), 0.0]])  # d(eˣ − x − 1)/d log π = 1 − eˣ with x = −0.5
