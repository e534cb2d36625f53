"""The paired bootstrap on cases small enough to work out by hand."""

from __future__ import annotations

import pytest
import torch

from maporl.study.stats import bootstrap_means, paired_difference, ratio_of_differences


def test_two_problems_one_seed():
    # Differences (1, 0): a resample of 2 draws both 1 (mean 1) with probability 1/4, one of each (0.5) with 1/2,
    # both 0 (0) with 1/4. Each tail holds far more than 2.5%, so the 95% interval is [0, 1].
    means = bootstrap_means([[1.0, 0.0]], samples=20_000)
    for value, probability in ((0.0, 0.25), (0.5, 0.5), (1.0, 0.25)):
        assert (means == value).double().mean().item() == pytest.approx(probability, abs=0.015)
    assert paired_difference([[1.0, 0.0]]) == (0.5, 0.0, 1.0)


def test_seeds_are_strata():
    # Seed 0's problems all differ by 1, seed 1's by 0: resampling within each seed keeps 2 of each, so every
    # resample's mean is 0.5 and the interval has no width. Pooled without strata it would range from 0 to 1.
    assert paired_difference([[1.0, 1.0], [0.0, 0.0]]) == (0.5, 0.5, 0.5)
    pooled = bootstrap_means([[1.0, 1.0, 0.0, 0.0]])
    assert pooled.min() < 0.25 and pooled.max() > 0.75


def test_one_problem_in_four_differs():
    # Differences (0, 0, −50, 0): a resample's mean is −12.5 x (number of −50 drawn), Binomial(4, 1/4): P(4) 0.4%,
    # P(3) 4.7%, so the 2.5% quantile falls among the resamples with three: −37.5; P(0) = 31.6%: the top is 0.
    mean, low, high = paired_difference([[0.0, 0.0, -50.0, 0.0]])
    assert (mean, low, high) == (-12.5, -37.5, 0.0)


def test_ratio_of_differences_and_its_interval():
    assert ratio_of_differences([[2.0, 2.0]], [[1.0, 1.0]]) == (2.0, 2.0, 2.0)
    # The denominator resamples to 1, 1.5 or 2 (1/4, 1/2, 1/4): the ratio 3, 2 or 1.5; the interval [1.5, 3].
    assert ratio_of_differences([[3.0, 3.0]], [[1.0, 2.0]]) == (2.0, 1.5, 3.0)


def test_the_same_inputs_give_the_same_interval_and_bad_input_says_so():
    assert torch.equal(bootstrap_means([[1.0, 0.0, 2.0]], seed=3), bootstrap_means([[1.0, 0.0, 2.0]], seed=3))
    with pytest.raises(ValueError, match="no differences"):
        paired_difference([[], []])
    with pytest.raises(ValueError, match="share of nothing"):
        ratio_of_differences([[1.0]], [[1.0, -1.0]])


def test_paired_rate_difference_by_hand():
    """Two problems, one seed. Team A self-corrects on problem 0 (1 of 1 opportunity) and not on problem 1 (0 of 1);
    team B never (0 of 1, 0 of 1). Rates 1/2 and 0: difference 0.5. A resample draws (0, 0), (0, 1), (1, 0) or (1, 1)
    with probability 1/4 each, for differences 1, 0.5, 0.5, 0: the 95% interval is [0, 1]."""
    from maporl.study.stats import paired_rate_difference

    a, b = [([1, 0], [1, 1])], [([0, 0], [1, 1])]
    assert paired_rate_difference(a, b) == (0.5, 0.0, 1.0)
    # Opportunities weigh: A's problem 1 offers 3 chances (rate 1/4); seeds pool as strata.
    diff, low, high = paired_rate_difference([([1, 0], [1, 3]), ([2], [2])], [([0, 0], [1, 1]), ([1], [2])])
    assert diff == pytest.approx((1 + 0 + 2) / (1 + 3 + 2) - (0 + 0 + 1) / (1 + 1 + 2)) and low < diff < high
    with pytest.raises(ValueError, match="same problems"):
        paired_rate_difference(a, [([0], [1])])
    with pytest.raises(ValueError, match="no opportunity"):
        paired_rate_difference(a, [([0, 0], [0, 0])])
