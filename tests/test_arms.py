"""The ARMS table of `maporl reproduce`: every entry is consistent, every target says where it comes from, and an
arm is one entry (it runs by name, trains with its overrides and feeds its claim rows)."""

from __future__ import annotations

import json

import pytest
from test_reproduce import _fake_runs as fake_runs

from maporl.config import load_config, with_overrides
from maporl.study.arms import ARMS, DEFAULT_ARMS, PAPER, Arm, Claim, _co_training
from maporl.study.settings import load_study


def test_every_arm_is_consistent_and_every_target_has_its_source():
    cfg = load_config()
    assert DEFAULT_ARMS == (
        "untrained", "single_agent_rl", "single_agent_rl_same_problems", "sft_traces", "maporl", "maporl_no_incentives"
    )  # fmt: skip
    for name, arm in ARMS.items():
        with_overrides(cfg, arm.overrides)  # each arm's settings validate
        assert arm.what and (arm.trained or not arm.overrides)
        assert not arm.steps_of or ARMS[arm.steps_of].trained and not ARMS[arm.steps_of].steps_of, name
        for claim in arm.claims:
            assert claim.against in ("", *ARMS) and (claim.measure == "gain") == (claim.against == ""), claim.label
            assert claim.target.source.startswith(PAPER) and len(claim.target.source) > 100, claim.label
    labels = [c.label for arm in ARMS.values() for c in arm.claims]
    assert len(labels) == len(set(labels))  # each row names its arm
    targets = {c.label: c.target.text() for arm in ARMS.values() for c in arm.claims}
    assert targets["(a) untrained team: final − turn 0"] == "≤ +1"
    assert targets["(b) MAPoRL − single-agent RL, same minutes"] == "≥ +8"
    assert targets["(c) MAPoRL − untrained"] == "≥ +15" and targets["(c) MAPoRL: final − turn 0"] == "≥ +5"
    assert targets["(d) transfer task: MAPoRL − untrained, share of (c)"] == "≥ 50%"


def test_an_arm_is_one_entry(tmp_path, monkeypatch):
    """A new arm in ARMS alone: `reproduce.methods` accepts it, it trains with its overrides for the budget, and its
    claim rows are measured beside the others."""
    from maporl.study import reproduce as rep

    monkeypatch.setitem(ARMS, "maporl_gamma0", Arm("γ = 0", ("reward.gamma=0.0",), claims=_co_training("γ = 0")))
    trained = {}

    def fake_train(method, cfg, run_dir, quiet, steps=0, solo_share=0.0):
        trained[method] = (with_overrides(cfg, ARMS[method].overrides).reward.gamma, steps)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "time/step": 1.0}) + "\n")
        return None, cfg

    fake_runs(monkeypatch, fake_train, {"untrained": 0.4, "single_agent_rl": 0.5})
    study = load_study(None, ["reproduce.methods=[untrained,single_agent_rl,maporl_gamma0]"])
    results = rep.reproduce(*study, tmp_path, quiet=True)
    assert trained == {"single_agent_rl": (0.3, 0), "maporl_gamma0": (0.0, 0)}
    rows = {c["claim"]: c for c in results["claims"]}
    assert list(rows) == [
        "(a) untrained team: final − turn 0",
        "(b) γ = 0 − single-agent RL, same minutes",
        "(c) γ = 0 − untrained",
        "(c) γ = 0: final − turn 0",
        "(d) transfer task: γ = 0 − untrained, share of (c)",
    ]
    assert rows["(b) γ = 0 − single-agent RL, same minutes"]["measured"] == pytest.approx(20.0)
    assert isinstance(ARMS["maporl_gamma0"].claims[0], Claim)
