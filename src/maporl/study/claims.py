"""The paper's four claims, measured by `maporl reproduce`: each a difference in points of final-turn accuracy (or a
share, for transfer) with a 95% interval from a paired bootstrap over problems, pooled over seeds (`stats.py`; where
every seed was evaluated on the same problems, as `reproduce` does, a resample draws each problem for all seeds at
once: `_by_problem`). Where the incentive arms ran, each is compared with α = β = 0 on the behaviour its incentive
targets (a difference of rates, resampled the same way). Which rows each arm feeds, and each row's target with its
source, is `arms.ARMS`.

A claim is "established" only when its whole interval clears the target (the lower bound for "at least" targets, the
upper bound for "at most") and so does every seed's own value, "not established" otherwise: a point estimate that
meets the target with an interval reaching below it is not evidence enough, nor is a mean one run carries.
"""

from __future__ import annotations

from collections.abc import Callable

from maporl.study.arms import ARMS, NO_INCENTIVES, Claim, Target
from maporl.study.behaviour import BEHAVIOURS, behaviour_per_problem, parse_correct
from maporl.study.stats import NoOpportunity, paired_difference, paired_rate_difference, ratio_of_differences

Evals = dict[str, dict[str, list[dict]]]  # method -> task key -> one eval.json dict per seed, in seed order


def _problems(evals: list[dict], score: Callable[[list[float]], float]) -> list[list[float]]:
    """Per seed, `score` (points) of every problem's per-turn accuracies."""
    return [[100 * score(row) for row in e["acc_per_problem_turn"]] for e in evals]


def _shared_problems(*teams: list[dict]) -> bool:
    """Were every seed of every team evaluated on the same problems, in the same order (the same eval.seed)?"""
    ids = [e["problem_ids"] for team in teams for e in team]
    return len(ids) > 1 and all(i == ids[0] for i in ids)


def _by_problem(per_seed: list[list[float]]) -> list[list[float]]:
    """One stratum of each problem's mean over seeds. Seeds evaluated on the same problems are not independent
    samples of problems (the untrained team even gives the same answers in every seed): resampling them as separate
    strata would count each problem once per seed and narrow the interval by up to √seeds. A resample draws a
    problem for every seed at once; the pooled mean is unchanged."""
    return [[sum(column) / len(column) for column in zip(*per_seed, strict=True)]]


def _strata(per_seed: list[list[float]], *teams: list[dict]) -> list[list[float]]:
    return _by_problem(per_seed) if _shared_problems(*teams) else per_seed


def _gain(evals: list[dict]) -> tuple[float, list[list[float]]]:
    """Final − turn 0 within one team: (mean over seeds of the means, per-problem differences to resample)."""
    mean = sum(_seed_gains(evals)) / len(evals)
    return mean, _strata(_problems(evals, lambda row: row[-1] - row[0]), evals)


def _check_same_problems(a: list[dict], b: list[dict]) -> None:
    """Paired differences compare the two teams problem by problem, seed by seed."""
    if any(x["problem_ids"] != y["problem_ids"] for x, y in zip(a, b, strict=True)):
        raise ValueError("paired differences need the same problems: evaluate both teams with the same eval.seed")


def _paired(a: list[dict], b: list[dict]) -> tuple[list[dict], list[dict]]:
    """The evaluations of the seeds both teams have, in a's order: matched by `seed` where every evaluation carries
    it (reproduce's do, so a trial run on fewer seeds pairs with the right ones), else by position."""
    if all("seed" in e for e in a + b):
        theirs = {e["seed"]: e for e in b}
        a = [e for e in a if e["seed"] in theirs]
        return a, [theirs[e["seed"]] for e in a]
    return a[: len(b)], b[: len(a)]


def _seed_leads(a: list[dict], b: list[dict]) -> list[float]:
    """Final turn of team a − team b in points, seed by seed (the seeds both have)."""
    a, b = _paired(a, b)
    return [100 * (x["acc_per_turn"][-1] - y["acc_per_turn"][-1]) for x, y in zip(a, b, strict=True)]


def _seed_gains(evals: list[dict]) -> list[float]:
    return [100 * (e["acc_per_turn"][-1] - e["acc_per_turn"][0]) for e in evals]


def _lead(a: list[dict], b: list[dict]) -> tuple[float, list[list[float]]]:
    """Final turn of team a − team b, paired problem by problem within each seed (the seeds both have)."""
    leads = _seed_leads(a, b)
    mean = sum(leads) / len(leads)
    a, b = _paired(a, b)
    _check_same_problems(a, b)
    diffs = [
        [100 * (p[-1] - q[-1]) for p, q in zip(x["acc_per_problem_turn"], y["acc_per_problem_turn"], strict=True)]
        for x, y in zip(a, b, strict=True)
    ]
    return mean, _strata(diffs, a, b)


def _behaviour_lead(a: list[dict], b: list[dict], name: str) -> tuple[float, float, float]:
    """Behaviour `name`'s rate (points, turns >= 1 and agents pooled) of team a − team b on the same problems (the
    seeds both have), with its paired interval: (difference, low, high)."""
    a, b = _paired(a, b)
    _check_same_problems(a, b)
    counts = [[behaviour_per_problem(parse_correct(e["correct_per_problem"]))[name] for e in t] for t in (a, b)]
    if _shared_problems(a, b):  # each problem's events and opportunities summed over seeds (see _by_problem)
        counts = [[tuple(map(_sum_columns, zip(*seeds, strict=True)))] for seeds in counts]
    diff, low, high = paired_rate_difference(*counts)
    return 100 * diff, 100 * low, 100 * high


def _sum_columns(rows: tuple[list[int], ...]) -> list[int]:
    return [sum(column) for column in zip(*rows, strict=True)]


def _row(label: str, measured: tuple[float, list[list[float]]], target: Target, per_seed: list[float]) -> dict:
    """A claim's row. `per_seed` (points, one per seed) goes beside the interval because the bootstrap resamples
    problems, not runs: two runs of one seed can differ by more than the interval is wide. Established only where
    the interval and every seed's value clear the target."""
    mean, diffs = measured
    low, high = paired_difference(diffs)[1:]
    row = _verdict(label, mean, low, high, target) | {"per_seed": per_seed}
    return _every_seed(row, [f"{v:+.1f}" for v in per_seed if not _clears(v, v, target)])


def _every_seed(row: dict, missed: list[str]) -> dict:
    """`row` not established where a seed's own value (`missed`, formatted) misses the target: with a few seeds a
    bootstrap over runs has too little to resample, so one run's collapse could carry a mean and its interval."""
    if row["verdict"] == "established" and missed:
        row["verdict"] = f"not established (a seed at {' / '.join(missed)})"
    return row


def _clears(low: float | None, high: float | None, target: Target) -> bool:
    """Does [low, high] clear `target`? A share with no interval (None: no (c) lead to take it of) clears nothing."""
    if low is None or high is None:
        return False
    return {">=": low >= target.value, ">": low > target.value, "<=": high <= target.value}[target.op]


def _verdict(label: str, mean: float, low: float, high: float, target: Target) -> dict:
    return {"claim": label, "measured": mean, "low": low, "high": high, "target": target.text(),
            "verdict": "established" if _clears(low, high, target) else "not established"}  # fmt: skip


def measure_claims(evals: Evals) -> list[dict]:
    """The claims rows for what was evaluated: every row `ARMS` lists for an arm that ran, where the arm it is
    measured against ran too (on a seed both have), in `Claim.section` order. A claim-(b) trial run beside
    single-agent RL in a comparison of its own so gets its (b) row and its gain over turns."""
    rows = []
    for name, arm in ARMS.items():
        if name in evals:
            rows += [(c.section, row) for c in arm.claims if (row := _measure(c, evals, name)) is not None]
    return [row for _, row in sorted(rows, key=lambda r: r[0])]


def _measure(claim: Claim, evals: Evals, name: str) -> dict | None:
    train = evals[name]["train_task"]
    if claim.measure == "gain":
        return _row(claim.label, _gain(train), claim.target, _seed_gains(train))
    if claim.against not in evals or not _paired(train, evals[claim.against]["train_task"])[0]:
        return None
    other = evals[claim.against]["train_task"]
    if claim.measure == "lead":
        return _row(claim.label, _lead(train, other), claim.target, _seed_leads(train, other))
    if claim.measure == "transfer_share":
        return _transfer_share(claim, evals[name], evals[claim.against])
    return _verdict(claim.label, *_behaviour_lead(train, other, claim.behaviour), claim.target)


def _transfer_share(claim: Claim, arm: dict[str, list[dict]], base: dict[str, list[dict]]) -> dict:
    """(d): the arm's lead over `base` on the transfer task as a share of its lead on the training task ((c)), with
    a ratio interval where there is a (c) lead to take a share of."""
    over_base = _lead(arm["train_task"], base["train_task"])
    transfer = _lead(arm["transfer_task"], base["transfer_task"])
    share = {"claim": claim.label, "transfer": transfer[0], "target": claim.target.text()}
    share["measured"] = _share(transfer[0], over_base[0])
    seeds = zip(
        _seed_leads(arm["transfer_task"], base["transfer_task"]),
        _seed_leads(arm["train_task"], base["train_task"]),
        strict=True,
    )
    share["per_seed"] = [_share(kept, lead) for kept, lead in seeds]
    share["low"] = share["high"] = None
    if over_base[0] > 0:
        share["low"], share["high"] = ratio_of_differences(transfer[1], over_base[1])[1:]
    share["verdict"] = "established" if _clears(share["low"], share["high"], claim.target) else "not established"
    # A nan share (a seed with no (c) lead) clears nothing, so it misses too.
    missed = [format_share(v) for v in share["per_seed"] if not _clears(v, v, claim.target)]
    return _every_seed(share, missed)


def _share(transfer: float, lead: float) -> float:
    """The transfer lead as a share of the train-task lead; undefined (nan) where there is no lead to keep."""
    return transfer / lead if lead > 0 else float("nan")


def format_share(share: float) -> str:
    return f"{100 * share:.1f}%" if share == share else "no lead"  # nan: the seed has no (c) lead to keep


def incentive_ablation(train: dict[str, list[dict]]) -> dict[str, dict[str, dict]]:
    """Each incentive setting that ran (the arms with an `ablation` name in ARMS: maporl's default weights, then the
    paper's arms) against α = β = 0 on the seeds both have: the final turn's accuracy and every behaviour's rate,
    each {measured, low, high} in points with its 95% paired interval."""
    base = train.get(NO_INCENTIVES)
    out: dict[str, dict[str, dict]] = {}
    for arm in (name for name, arm in ARMS.items() if arm.ablation):
        if not base or arm not in train or not _paired(train[arm], base)[0]:
            continue
        mean, diffs = _lead(train[arm], base)
        low, high = paired_difference(diffs)[1:]
        out[arm] = {"final_turn": {"measured": mean, "low": low, "high": high}}
        for name in BEHAVIOURS:
            try:
                lead = _behaviour_lead(train[arm], base, name)
            except NoOpportunity:  # a cell with no rate: "–"
                continue
            out[arm][name] = dict(zip(("measured", "low", "high"), lead, strict=True))
    return out
