"""The claims table: paired intervals from per-problem accuracies, and "established" only when the whole interval
clears the target (hand-built evaluations: 2 problems, 2 turns, one seed)."""

from __future__ import annotations

import pytest

from maporl.study.claims import measure_claims
from maporl.study.document import to_markdown
from maporl.study.tables import ablation_blocks, claims_blocks


def claims_markdown(rows: list[dict]) -> str:
    return to_markdown(claims_blocks(rows))


def evaluation(*problems: list[float]) -> dict:
    """One seed's eval.json from each problem's team accuracy per turn."""
    turns = list(zip(*problems, strict=True))
    return {
        "acc_per_turn": [sum(t) / len(t) for t in turns],
        "problem_ids": [f"p{k}" for k in range(len(problems))],
        "acc_per_problem_turn": [list(p) for p in problems],
    }


def method(train, transfer) -> dict:
    return {"train_task": [evaluation(*train)], "transfer_task": [evaluation(*transfer)]}


FLAT = ([0.4, 0.4], [0.4, 0.4])


def claims() -> list[dict]:
    evals = {
        "untrained": method(FLAT, FLAT),
        # final turn 0.55, 0.62: MAPoRL leads by 5 and 8 points (mean 6.5, interval [5, 8])
        "single_agent_rl": method(([0.5, 0.55], [0.6, 0.62]), FLAT),
        # final 0.6, 0.7: +20 and +30 over untrained; over turns 0 and +20 (mean 10, interval [0, 20])
        "maporl": method(([0.6, 0.6], [0.5, 0.7]), ([0.5, 0.525], [0.5, 0.525])),
    }
    return measure_claims(evals)


def test_each_claim_its_interval_and_verdict():
    a, b, lead, gain, d = claims()  # (a), (b) same minutes, (c) lead, (c) over turns, (d)
    assert [r["claim"][:3] for r in (a, b, lead, gain, d)] == ["(a)", "(b)", "(c)", "(c)", "(d)"]

    def numbers(row):
        return pytest.approx((row["measured"], row["low"], row["high"]))

    assert (0.0, 0.0, 0.0) == numbers(a) and a["verdict"] == "established"  # ≤ +1
    assert (6.5, 5.0, 8.0) == numbers(b) and b["verdict"] == "not established"  # ≥ +8
    assert (25.0, 20.0, 30.0) == numbers(lead) and lead["verdict"] == "established"  # ≥ +15
    # The point estimate meets ≥ +5, but the interval reaches 0: not established.
    assert (10.0, 0.0, 20.0) == numbers(gain) and gain["verdict"] == "not established"
    # Transfer +12.5 over the (c) lead of 25: 50%. The lead resamples to 20, 25 or 30: the share to 62.5%, 50% or
    # 41.7%, so the interval reaches below the 50% target.
    assert (d["transfer"], d["measured"], d["low"], d["high"]) == pytest.approx((12.5, 0.5, 12.5 / 30, 12.5 / 20))
    assert d["verdict"] == "not established"


def test_markdown_rows():
    table = claims_markdown(measure_claims({
        "untrained": method(FLAT, FLAT),
        "single_agent_rl": method(([0.5, 0.55], [0.6, 0.62]), FLAT),
        "maporl": method(([0.6, 0.6], [0.5, 0.7]), ([0.5, 0.525], [0.5, 0.525])),
    }))  # fmt: skip
    assert "| (a) untrained team: final − turn 0 | +0.0 | [+0.0, +0.0] | ≤ +1 | established |" in table
    assert "| (b) MAPoRL − single-agent RL, same minutes | +6.5 | [+5.0, +8.0] | ≥ +8 | not established |" in table
    assert "| (d) transfer task: MAPoRL − untrained, share of (c) | +12.5 (50.0%) | [41.7%, 62.5%] | ≥ 50% |" in table
    assert "same problems" not in table  # that baseline was not run


def test_a_subset_of_methods_gets_the_claims_it_measures_and_other_problems_are_refused():
    claims = [r["claim"] for r in measure_claims({"untrained": method(FLAT, FLAT), "maporl": method(FLAT, FLAT)})]
    assert claims == [  # no single-agent RL: no (b)
        "(a) untrained team: final − turn 0",
        "(c) MAPoRL − untrained",
        "(c) MAPoRL: final − turn 0",
        "(d) transfer task: MAPoRL − untrained, share of (c)",
    ]
    assert [r["claim"] for r in measure_claims({"maporl": method(FLAT, FLAT)})] == ["(c) MAPoRL: final − turn 0"]
    assert measure_claims({"single_agent_rl": method(FLAT, FLAT)}) == []
    evals = {m: method(FLAT, FLAT) for m in ("untrained", "single_agent_rl", "maporl")}
    evals["maporl"]["train_task"][0]["problem_ids"] = ["x", "y"]
    with pytest.raises(ValueError, match="same problems"):
        measure_claims(evals)


def arm(*problems: str) -> dict:
    """One seed's evaluation on the train task from each problem's right/wrong per agent and turn ("01 00 00")."""
    from maporl.study.behaviour import behaviour_metrics, parse_correct

    return {"train_task": [{"problem_ids": [f"p{k}" for k in range(len(problems))],
                            "correct_per_problem": list(problems),
                            "behaviour": behaviour_metrics(parse_correct(list(problems)))}]}  # fmt: skip


def test_incentive_arm_against_no_incentives_on_the_behaviour_it_targets():
    # α = β = 0: nobody ever right, 3 self-correction opportunities a problem (all wrong, peers' majority wrong), no
    # event: rate 0. α1 arm: agent 0 fixes it alone on both problems: 1 of 3 each, rate 1/3 in every resample.
    none = arm("00 00 00", "00 00 00")
    rows = measure_claims({"maporl_no_incentives": none, "maporl_alpha1_only": arm("01 00 00", "01 00 00")})
    assert [(r["claim"], r["verdict"]) for r in rows] == [
        ("incentives: α1 = 2 alone − α = β = 0, self-correction rate", "established")
    ]
    assert (rows[0]["measured"], rows[0]["low"], rows[0]["high"]) == pytest.approx((100 / 3, 100 / 3, 100 / 3))
    # Only problem 0 fixed: 1/6 in all, but a resample of problem 1 twice has rate 0: the interval reaches 0, and
    # "above 0" is not established.
    (row,) = measure_claims({"maporl_no_incentives": none, "maporl_alpha1_only": arm("01 00 00", "00 00 00")})
    assert (row["measured"], row["low"], row["high"]) == pytest.approx((100 / 6, 0.0, 100 / 3))
    assert row["verdict"] == "not established" and row["target"] == "> +0"


def test_each_claim_b_trial_gets_its_row_against_single_agent_rl():
    evals = {
        "untrained": method(FLAT, FLAT),
        "single_agent_rl": method(([0.5, 0.55], [0.6, 0.62]), FLAT),
        "maporl": method(([0.6, 0.6], [0.5, 0.7]), FLAT),
        "maporl_solo_warmup": method(([0.6, 0.7], [0.6, 0.8]), FLAT),  # final 0.7, 0.8: +15, +18 over 0.55, 0.62
        "maporl_shared": method(([0.6, 0.55], [0.6, 0.62]), FLAT),  # final = single-agent RL's: +0
    }
    rows = {r["claim"]: r for r in measure_claims(evals) if r["claim"].startswith("(b) MAPoRL ")}
    warmup = rows["(b) MAPoRL after a solo warm-up − single-agent RL, same minutes"]
    assert (warmup["measured"], warmup["low"], warmup["high"]) == pytest.approx((16.5, 15.0, 18.0))
    assert warmup["verdict"] == "established"
    shared = rows["(b) MAPoRL with one shared adapter − single-agent RL, same minutes"]
    assert (shared["measured"], shared["low"], shared["high"], shared["verdict"]) == (0, 0, 0, "not established")
    assert not any("epochs" in c or "rollouts" in c for c in rows)  # trials that did not run get no row
    # A trial run beside single-agent RL in a comparison of its own (no untrained team, no maporl) gets its row too,
    # and its gain over turns: claim (c) must still hold before a trial becomes the default.
    alone = {m: evals[m] for m in ("single_agent_rl", "maporl_solo_warmup")}
    b, gain = measure_claims(alone)
    assert b["claim"] == warmup["claim"] and b["measured"] == pytest.approx(16.5)
    # final 0.7, 0.8 from 0.6, 0.6 at turn 0: +10, +20 over turns
    assert gain["claim"] == "(c) MAPoRL after a solo warm-up: final − turn 0"
    assert (gain["measured"], gain["low"], gain["high"], gain["verdict"]) == pytest.approx((15, 10, 20, "established"))


def test_a_trial_beside_the_untrained_team_gets_every_claim_that_decides_the_default():
    """(a) from the untrained team; for the trial (b), (c) against the untrained team and over turns, (d)."""
    evals = {
        "untrained": method(FLAT, FLAT),
        "single_agent_rl": method(([0.5, 0.55], [0.6, 0.62]), FLAT),
        # final 0.6, 0.62 (+5, +0 over single-agent RL; +20, +22 over untrained); over turns +0 and +2: (c)'s gain
        # fails; transfer +10, +12 over untrained (half of (c)'s lead)
        "maporl_shared": method(([0.6, 0.6], [0.6, 0.62]), ([0.4, 0.5], [0.4, 0.52])),
    }
    rows = {r["claim"]: r for r in measure_claims(evals)}
    assert list(rows) == [
        "(a) untrained team: final − turn 0",
        "(b) MAPoRL with one shared adapter − single-agent RL, same minutes",
        "(c) MAPoRL with one shared adapter − untrained",
        "(c) MAPoRL with one shared adapter: final − turn 0",
        "(d) transfer task: MAPoRL with one shared adapter − untrained, share of (c)",
    ]
    lead = rows["(c) MAPoRL with one shared adapter − untrained"]
    assert (lead["measured"], lead["low"], lead["high"]) == pytest.approx((21, 20, 22))
    assert lead["verdict"] == "established"
    gain = rows["(c) MAPoRL with one shared adapter: final − turn 0"]
    assert (gain["measured"], gain["verdict"]) == (pytest.approx(1), "not established")
    share = rows["(d) transfer task: MAPoRL with one shared adapter − untrained, share of (c)"]
    assert (share["transfer"], share["measured"]) == pytest.approx((11, 11 / 21))


def test_each_seeds_own_value_stands_beside_the_mean():
    """Two seeds where single-agent RL's second run collapsed: the mean and interval (over problems) look decisive;
    the per-seed values show one seed made the lead."""
    seed0 = {"untrained": method(FLAT, FLAT), "single_agent_rl": method(([0.5, 0.55], [0.6, 0.62]), FLAT),
             "maporl": method(([0.6, 0.6], [0.5, 0.7]), ([0.5, 0.525], [0.5, 0.525]))}  # fmt: skip
    seed1 = dict(seed0, single_agent_rl=method(([0.5, 0.15], [0.6, 0.22]), FLAT))  # final 0.15, 0.22: +45, +48
    evals = {m: {k: seed0[m][k] + seed1[m][k] for k in ("train_task", "transfer_task")} for m in seed0}
    rows = measure_claims(evals)
    a, b = rows[:2]
    assert b["per_seed"] == pytest.approx([6.5, 46.5]) and b["measured"] == pytest.approx(26.5)
    assert a["per_seed"] == [0.0, 0.0] and a["verdict"] == "established"
    # The interval over problems clears +8; seed 0 alone (+6.5) does not, so the lead is not established.
    assert b["low"] >= 8 and b["verdict"] == "not established (a seed at +6.5)"
    table = claims_markdown(rows)
    assert "| (b) MAPoRL − single-agent RL, same minutes | +26.5 (seeds +6.5 / +46.5) |" in table
    assert "(seeds" not in claims_markdown(claims())  # one seed: its value is the mean


def test_transfer_share_holds_every_seed_to_the_target():
    """(d) by seed: both seeds lead the untrained team by 40 points on the train task; on the transfer task seed 0
    keeps all of it (+40), seed 1 a quarter (+10). Pooled, 25 of 40 (62.5%, and every resample too, since each
    problem's mean over seeds is the same): the interval clears 50%, seed 1 does not."""
    up = ([0.4, 0.8], [0.4, 0.8])
    seed0 = {"untrained": method(FLAT, FLAT), "maporl": method(up, up)}
    seed1 = {"untrained": method(FLAT, FLAT), "maporl": method(up, ([0.4, 0.5], [0.4, 0.5]))}
    evals = {m: {k: seed0[m][k] + seed1[m][k] for k in ("train_task", "transfer_task")} for m in seed0}
    d = measure_claims(evals)[-1]
    assert d["claim"].startswith("(d)")
    assert (d["transfer"], d["measured"], d["low"], d["high"]) == pytest.approx((25, 0.625, 0.625, 0.625))
    assert d["per_seed"] == pytest.approx([1.0, 0.25])
    assert d["verdict"] == "not established (a seed at 25.0%)"
    assert "| +25.0 (62.5%) (seeds 100.0% / 25.0%) | [62.5%, 62.5%] | ≥ 50% |" in claims_markdown([d])
    # A seed with no lead over the untrained team on the train task has no share to keep: it misses the target.
    seed1["maporl"] = method(FLAT, up)
    evals = {m: {k: seed0[m][k] + seed1[m][k] for k in ("train_task", "transfer_task")} for m in seed0}
    d = measure_claims(evals)[-1]
    assert d["per_seed"][0] == 1.0 and d["per_seed"][1] != d["per_seed"][1]  # nan
    assert d["verdict"] == "not established (a seed at no lead)"  # pooled: 40 of 20, 200%
    assert "(seeds 100.0% / no lead)" in claims_markdown([d])


def test_seeds_on_the_same_problems_are_resampled_together_not_as_strata():
    """Three seeds that gave the same answers on the same problems are one sample of problems, not three: every row
    keeps the one-seed interval. Seeds evaluated on other problems stay strata, and then the interval narrows."""
    from maporl.study import claims as c
    from maporl.study.stats import paired_difference

    one = {m: method(*e) for m, e in {
        "untrained": (([0.4, 0.0], [0.4, 0.4], [0.0, 0.4]), FLAT),  # final − turn 0: −40, 0, +40
        "single_agent_rl": (([0.5, 0.55], [0.6, 0.62], [0.6, 0.6]), FLAT),
        "maporl": (([0.6, 0.6], [0.5, 0.7], [0.4, 0.9]), ([0.5, 0.525], [0.5, 0.525])),
    }.items()}  # fmt: skip
    three = {m: {k: v * 3 for k, v in e.items()} for m, e in one.items()}
    spans = [[(r["measured"], r["low"], r["high"]) for r in measure_claims(e)] for e in (one, three)]
    assert sum(spans[0], ()) == pytest.approx(sum(spans[1], ()))
    assert spans[0][0] == (0.0, -40.0, 40.0)  # (a) has a real interval here, not a point
    seeds = three["untrained"]["train_task"]
    elsewhere = [seeds[0], *(dict(e, problem_ids=["q0", "q1", "q2"]) for e in seeds[1:])]
    mean, strata = c._gain(elsewhere)
    assert len(strata) == 3 and mean == 0
    _, low, high = paired_difference(strata)
    assert spans[0][0][1] < low < high < spans[0][0][2]
    # Behaviour rates: each problem's events and opportunities summed over the seeds that share it.
    none, alpha1 = arm("00 00 00", "00 00 00"), arm("01 00 00", "00 00 00")
    single = measure_claims({"maporl_no_incentives": none, "maporl_alpha1_only": alpha1})[0]
    tripled = measure_claims({m: {"train_task": e["train_task"] * 3} for m, e in
                              (("maporl_no_incentives", none), ("maporl_alpha1_only", alpha1))})[0]  # fmt: skip
    assert (tripled["measured"], tripled["low"], tripled["high"]) == pytest.approx(
        (single["measured"], single["low"], single["high"])
    )


def test_incentive_ablation_gives_accuracy_and_every_behaviour_against_no_incentives():
    """Each setting that ran against α = β = 0: the final turn's accuracy and each behaviour's rate, paired."""
    from maporl.study.claims import incentive_ablation

    def team(*problems: str) -> list[dict]:
        e = arm(*problems)["train_task"][0]
        per_turn = [[sum(int(a[t]) for a in p.split()) / 3 for t in range(2)] for p in problems]
        return [
            e | {"acc_per_problem_turn": per_turn, "acc_per_turn": [sum(c) / 2 for c in zip(*per_turn, strict=True)]}
        ]

    none = team("00 00 00", "00 00 00")
    train = {"maporl_no_incentives": none, "maporl_alpha1_only": team("01 00 00", "01 00 00"), "untrained": none}
    table = incentive_ablation(train)
    assert list(table) == ["maporl_alpha1_only"]  # maporl and the β0 arm did not run; untrained is no setting
    row = table["maporl_alpha1_only"]
    # Final turn: 1 of 3 agents right on each problem, against none: +33.3 in every resample.
    assert (row["final_turn"]["measured"], row["final_turn"]["low"]) == pytest.approx((100 / 3, 100 / 3))
    assert row["self_correction"]["measured"] == pytest.approx(100 / 3)
    assert set(row) == {"final_turn", "self_correction"}  # no agent was ever right: no other rate to compare
    lines = to_markdown(ablation_blocks(table)).splitlines()
    # Only self-correction had an opportunity (nobody was ever right, no peer majority right): one behaviour column.
    assert lines[2:5] == [
        "| setting | final turn | self correction |",
        "|---|---|---|",
        "| α1 = 2 alone (maporl_alpha1_only) | +33.3 [+33.3, +33.3] | +33.3 [+33.3, +33.3] |",
    ]
    assert incentive_ablation({"maporl": none}) == {} and ablation_blocks({}) == []
