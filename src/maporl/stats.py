"""Paired bootstrap intervals for differences between methods evaluated on the same problems.

A claim such as "MAPoRL's final turn beats single-agent RL by 8 points" compares two teams on the *same* held-out
problems (every evaluation draws them from `eval.seed`), once per training seed. Per problem p of seed s the paired
difference is d[s][p] = score_A(p) − score_B(p); the estimate is the mean of all d, pooled over seeds, and its 95%
interval comes from resampling problems with replacement *within* each seed (seeds as strata: every resample keeps
each seed's share), taking the 2.5th and 97.5th percentiles of the resampled means. Pairing removes the problems'
difficulty from the noise, which is most of it at 500 problems.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def bootstrap_means(differences: Sequence[Sequence[float]], samples: int = 10_000, seed: int = 0) -> torch.Tensor:
    """(samples,) means of the pooled differences, each over one stratified resample.

    Args:
        differences: one list of per-problem differences per stratum (seed); strata may differ in size.
        samples: number of resamples.
        seed: the resampling's seed (the same inputs give the same interval).
    """
    generator = torch.Generator().manual_seed(seed)
    strata = [torch.tensor(d, dtype=torch.float64) for d in differences if len(d)]
    if not strata:
        raise ValueError("no differences to resample")
    sums = torch.zeros(samples, dtype=torch.float64)
    for d in strata:
        draws = torch.randint(len(d), (samples, len(d)), generator=generator)
        sums += d[draws].sum(1)
    return sums / sum(len(d) for d in strata)


def interval(means: torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of a bootstrap distribution."""
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=means.dtype)).tolist()
    return low, high


def pooled_mean(differences: Sequence[Sequence[float]]) -> float:
    flat = [x for d in differences for x in d]
    if not flat:
        raise ValueError("no differences to resample")
    return sum(flat) / len(flat)


def paired_difference(
    differences: Sequence[Sequence[float]], samples: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high): the pooled mean of per-problem paired differences and its stratified bootstrap interval."""
    return (pooled_mean(differences), *interval(bootstrap_means(differences, samples, seed), level))


def ratio_of_differences(
    numerator: Sequence[Sequence[float]],
    denominator: Sequence[Sequence[float]],
    samples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(ratio, low, high) of two pooled mean differences measured on different problems (e.g. the share of a gain
    that carries over to another task), each resampled on its own."""
    if pooled_mean(denominator) == 0:
        raise ValueError("the denominator's mean difference is 0: a share of nothing has no interval")
    num, den = bootstrap_means(numerator, samples, seed), bootstrap_means(denominator, samples, seed + 1)
    return (pooled_mean(numerator) / pooled_mean(denominator), *interval(num / den, level))
