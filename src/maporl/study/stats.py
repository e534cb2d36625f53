"""Paired bootstrap intervals for differences between methods evaluated on the same problems.

A claim such as "MAPoRL's final turn beats single-agent RL by 8 points" compares two teams on the *same* held-out
problems (every evaluation draws them from `eval.seed`), once per training seed. Per problem p of seed s the paired
difference is d[s][p] = score_A(p) − score_B(p); the estimate is the mean of all d, pooled over seeds, and its 95%
interval comes from resampling problems with replacement *within* each seed (seeds as strata: every resample keeps
each seed's share), taking the 2.5th and 97.5th percentiles of the resampled means. Pairing removes the problems'
difficulty from the noise, which is most of it at 500 problems. Seeds evaluated on the *same* problems are not
separate samples of problems: `claims` passes their per-problem means over seeds as one stratum instead.
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


class NoOpportunity(ValueError):
    """A rate difference where a team never had the behaviour's condition: there is no rate to compare."""


def paired_rate_difference(
    a: Sequence[tuple[Sequence[int], Sequence[int]]],
    b: Sequence[tuple[Sequence[int], Sequence[int]]],
    samples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(difference, low, high) of two pooled rates measured on the same problems, e.g. how much more often team A's
    agents self-correct than team B's: each rate is Σ events / Σ opportunities over the problems of every seed.

    Args:
        a, b: per seed (stratum), per problem (events, opportunities) of each team; the problems of a seed are the
            same, in the same order, for both. Resampling draws problems within each seed, the same ones for both
            teams (a paired bootstrap); a resample in which a team has no opportunity is left out.
    """
    if len(a) != len(b) or any(len(x[0]) != len(y[0]) for x, y in zip(a, b, strict=True)):
        raise ValueError("paired rates need the same problems per seed for both teams")
    generator = torch.Generator().manual_seed(seed)
    totals = torch.zeros(4, samples, dtype=torch.float64)  # events a, opportunities a, events b, opportunities b
    point = torch.zeros(4, dtype=torch.float64)
    for (ea, na), (eb, nb) in zip(a, b, strict=True):
        if not len(ea):
            continue
        counts = torch.tensor([ea, na, eb, nb], dtype=torch.float64)  # (4, problems)
        point += counts.sum(1)
        draws = torch.randint(counts.shape[1], (samples, counts.shape[1]), generator=generator)
        totals += torch.stack([row[draws].sum(1) for row in counts])  # row by row: (samples, problems) at a time
    if point[1] == 0 or point[3] == 0:
        raise NoOpportunity("a team has no opportunity for this behaviour: no rate to compare")
    diffs = totals[0] / totals[1] - totals[2] / totals[3]  # nan where a resample has no opportunity
    tail = (1 - level) / 2
    low, high = torch.nanquantile(diffs, torch.tensor([tail, 1 - tail], dtype=diffs.dtype)).tolist()
    return (point[0] / point[1] - point[2] / point[3]).item(), low, high
