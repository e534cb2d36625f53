"""`maporl reproduce` with fake training and evaluation: its tables, partial results, resuming, the incentive arms,
and the per-seed record a comparison kept in git resumes from."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_cfg

from maporl.config import load_config
from maporl.errors import UsageError
from maporl.study.arms import ARMS, DEFAULT_ARMS
from maporl.study.settings import load_study


def evaluation(acc: float) -> dict:
    """A whole eval.json (every key of evaluate.EVAL_KEYS): two problems, 3 agents, two turns, the team's accuracy
    `acc` at both; problem p has a persuasion opportunity, q three self-correction ones (behaviour.py)."""
    from maporl.study.behaviour import behaviour_metrics, parse_correct

    correct = ["11 00 00", "00 00 00"]
    return {"num_problems": 2, "num_agents": 3, "num_turns": 2, "acc_per_turn": [acc, acc],
            "majority_per_turn": [acc, acc], "acc_per_agent_turn": [[acc, acc]] * 3, "wrong_to_right": [0.1],
            "right_to_wrong": [0.1], "consensus_per_turn": [1.0, 1.0], "any_correct_per_turn": [acc, acc],
            "parse_rate": 1.0, "behaviour": behaviour_metrics(parse_correct(correct)), "problem_ids": ["p", "q"],
            "acc_per_problem_turn": [[acc, acc], [acc, acc]], "correct_per_problem": correct}  # fmt: skip


def test_summarize_over_seeds_by_hand():
    from maporl.study.reproduce import summarize

    def seed(acc: list[float], any_right: list[float]) -> dict:
        m = evaluation(0.0) | {"acc_per_turn": acc, "majority_per_turn": acc, "right_to_wrong": [0.3]}
        return m | {"any_correct_per_turn": any_right}

    s = summarize([seed([0.4, 0.5], [0.6, 0.7]), seed([0.6, 0.7], [0.8, 0.7])])
    assert s["acc_mean"] == pytest.approx([0.5, 0.6]) and s["acc_std"] == pytest.approx([0.1, 0.1])
    assert s["any_correct_mean"] == pytest.approx([0.7, 0.7]) and s["any_correct_std"] == pytest.approx([0.1, 0.0])
    # Opportunities and events summed over the seeds: persuasion's 2 (agent 0 right, both peers wrong) twice.
    assert s["behaviour"]["persuasion"] == {"count_per_turn": [4], "events_per_turn": [0]}


def _fake_runs(monkeypatch, fake_train, accuracy: dict[str, float]) -> None:
    """`reproduce` with `fake_train` and evaluations that score each method `accuracy[method]` (else 0.7) on two
    problems at both turns; no report."""
    from maporl.study import reproduce as rep

    def fake_evaluate(cfg, ckpt, task_name, out):
        m = evaluation(accuracy.get(out.parent.parent.name, 0.7))
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(m))
        return m

    monkeypatch.setattr(rep, "_train", fake_train)
    monkeypatch.setattr(rep, "_evaluate", fake_evaluate)
    monkeypatch.setattr("maporl.study.report.write_report", lambda out: None)


def test_reproduce_writes_tables_after_every_run(tmp_path, monkeypatch):
    """A comparison cut off part-way keeps the tables of what it evaluated, marked partial; --resume completes them."""
    from maporl.study import reproduce as rep

    cut_off = {"on": True}

    def fake_train(method, cfg, run_dir, quiet, steps=0, solo_share=0.0):
        if method == "maporl" and cut_off["on"]:
            raise UsageError("cut off")  # stands in for an interruption mid-training
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 3, "time/step": 1.0}) + "\n")
        return None, cfg

    _fake_runs(monkeypatch, fake_train, {"untrained": 0.4, "single_agent_rl": 0.6})
    methods = ("untrained", "single_agent_rl", "maporl")
    cfg = load_study(None, ["reproduce.budget_min=1", "reproduce.methods=[untrained,single_agent_rl,maporl]"])
    with pytest.raises(UsageError, match="cut off"):
        rep.reproduce(*cfg, tmp_path, quiet=True)
    partial = json.loads((tmp_path / "results.json").read_text())
    assert partial["seeds_done"] == {"untrained": 1, "single_agent_rl": 1}
    assert list(partial["methods"]) == ["untrained", "single_agent_rl"]
    assert partial["methods"]["single_agent_rl"]["train_task"]["acc_mean"] == [0.6, 0.6]
    table = (tmp_path / "results.md").read_text()
    assert "Partial" in table and "untrained 1, single_agent_rl 1" in table and "| maporl |" not in table
    cut_off["on"] = False
    final = rep.reproduce(*cfg, tmp_path, resume=True, quiet=True)
    assert "seeds_done" not in final and list(final["methods"]) == list(methods)
    table = (tmp_path / "results.md").read_text()
    assert "Partial" not in table
    assert "| (c) MAPoRL − untrained | +30.0 | [+30.0, +30.0] | ≥ +15 | established |" in table


def test_incentive_ablations_run_by_name_with_one_incentive_each(tmp_path, monkeypatch):
    """The paper's incentive arms train the config with one incentive at 2 and the others at 0; they are not part
    of the default comparison, they train for as many steps as maporl_no_incentives took on the seed, and their rows
    sit after maporl_no_incentives in the tables."""
    from maporl.study import reproduce as rep

    trained, order = {}, []

    def fake_train(method, cfg, run_dir, quiet, steps=0, solo_share=0.0):
        train_cfg = load_config(None, ARMS[method].overrides)
        trained[method] = (train_cfg.reward.alpha, train_cfg.reward.beta, train_cfg.algo.incentive_placement)
        order.append((method, steps))
        _metrics(run_dir, [1.0] * (5 if method == "maporl_no_incentives" else steps))
        return None, cfg

    _fake_runs(monkeypatch, fake_train, {})
    assert not {"maporl_alpha1_only", "maporl_beta0_only"} & set(DEFAULT_ARMS)  # not in the default comparison
    named = "[maporl_beta0_only,maporl_no_incentives,maporl_alpha1_only,maporl_alpha1_after_baseline]"
    results = rep.reproduce(*load_study(None, [f"reproduce.methods={named}"]), tmp_path, quiet=True)
    assert trained == {
        "maporl_no_incentives": ((0.0, 0.0), (0.0, 0.0), "reward"),
        "maporl_alpha1_only": ((0.0, 2.0), (0.0, 0.0), "reward"),
        "maporl_beta0_only": ((0.0, 0.0), (2.0, 0.0), "reward"),
        # The same weight, added to the advantage after the group baseline.
        "maporl_alpha1_after_baseline": ((0.0, 2.0), (0.0, 0.0), "advantage"),
    }
    assert list(results["methods"]) == [
        "maporl_no_incentives", "maporl_alpha1_only", "maporl_beta0_only", "maporl_alpha1_after_baseline"
    ]  # fmt: skip
    # Trained after it, for as many steps as it took: the arms differ from it in the reward only, whatever the host.
    assert order == [
        ("maporl_no_incentives", 0), ("maporl_beta0_only", 5), ("maporl_alpha1_only", 5),
        ("maporl_alpha1_after_baseline", 5),
    ]  # fmt: skip


def test_resume_compares_the_settings_not_the_files_text(tmp_path):
    """A key the saved config leaves out takes its default, as in any config file; a changed setting, or one maporl
    does not know, stops the resume."""
    import yaml

    from maporl.study import reproduce as rep

    cfg = load_study(None, ["reproduce.budget_min=1"])
    saved = tmp_path / "config.yaml"
    older = yaml.safe_load(rep._settings(*cfg))
    del older["ray"]  # a section left out: its defaults
    saved.write_text(yaml.safe_dump(older))
    assert rep._same_settings(saved, *cfg)
    assert not rep._same_settings(saved, *load_study(None, ["reproduce.budget_min=2"]))
    older["no_such_setting"] = 1
    saved.write_text(yaml.safe_dump(older))
    assert not rep._same_settings(saved, *cfg)


def _metrics(run_dir, seconds: list[float]) -> None:
    rows = [{"step": k + 1, "time/step": s} for k, s in enumerate(seconds)] + [{"step": len(seconds), "eval/acc": 0.5}]
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_done_json_keeps_steps_so_a_comparison_resumes_without_its_large_files(tmp_path, monkeypatch):
    """Each (seed, method) records its steps and seconds per step in done.json; the per-seed table shows them; a
    comparison whose metrics.jsonl files are gone (as kept in git) still resumes, and the same-problems baseline
    still takes maporl's step count from done.json. A done.json without them is refused, naming the file."""
    from maporl.study import reproduce as rep

    given_steps = {}

    def fake_train(method, cfg, run_dir, quiet, steps=0, solo_share=0.0):
        given_steps[method] = steps
        _metrics(run_dir, [2.0, 4.0, 6.0] if method == "maporl" else [1.0])
        return None, cfg

    _fake_runs(monkeypatch, fake_train, {"untrained": 0.4, "maporl": 0.75})
    cfg = load_study(None, ["reproduce.methods=[untrained,maporl]"])
    rep.reproduce(*cfg, tmp_path, quiet=True)
    done = json.loads((tmp_path / "maporl" / "seed0" / "done.json").read_text())
    assert (done["steps"], done["sec_per_step"]) == (3, 4.0)
    older = {k: v for k, v in done.items() if k not in ("steps", "sec_per_step", "incentives")}
    (tmp_path / "maporl" / "seed0" / "done.json").write_text(json.dumps(older))
    with pytest.raises(UsageError, match=r"maporl/seed0/done.json is in a format .* \(no steps, sec_per_step, inc"):
        rep.reproduce(*cfg, tmp_path, resume=True, quiet=True)
    (tmp_path / "maporl" / "seed0" / "done.json").write_text(json.dumps(done))
    for metrics in tmp_path.glob("*/seed0/metrics.jsonl"):
        metrics.unlink()
    assert rep.steps_trained(tmp_path / "maporl" / "seed0") == 3
    named = "reproduce.methods=[untrained,maporl,single_agent_rl_same_problems]"
    results = rep.reproduce(*load_study(None, [named]), tmp_path, resume=True, quiet=True)
    assert given_steps == {"maporl": 0, "single_agent_rl_same_problems": 3}
    assert results["methods"]["maporl"]["per_seed"] == [
        {
            "seed": 0,
            "steps": 3,
            "sec_per_step": 4.0,
            "incentives": {},
            "train_task": [0.75, 0.75],
            "transfer_task": [0.75, 0.75],
        }
    ]
    assert results["methods"]["untrained"]["per_seed"][0] == {
        "seed": 0, "train_task": [0.4, 0.4], "transfer_task": [0.4, 0.4]
    }  # fmt: skip
    table = (tmp_path / "results.md").read_text()
    assert "| maporl | 75.0 / 75.0 (3 steps, 4.00 s) | 75.0 |" in table
    assert "| untrained | 40.0 / 40.0 | 40.0 |" in table


def test_run_stats_from_metrics(tmp_path):
    """A run's steps and mean seconds per step come from its metrics.jsonl (rows with a step time)."""
    from maporl.study import reproduce as rep

    run = tmp_path / "maporl" / "seed0"
    _metrics(run, [1.0, 3.0])
    assert rep.run_stats(run) == {"steps": 2, "sec_per_step": 2.0, "incentives": {}}
    assert rep.run_stats(tmp_path / "untrained" / "seed0") == {}


def test_methods_all_runs_every_arm_in_table_order(tmp_path, monkeypatch, capsys):
    """`--methods all` is the default comparison plus the incentive arms, so one command writes both tables."""
    from maporl.cli import main

    def fake_train(method, cfg, run_dir, quiet, steps=0, solo_share=0.0):
        _metrics(run_dir, [1.0])
        return None, cfg

    _fake_runs(monkeypatch, fake_train, {})
    assert main(["reproduce", "--methods", "all", "--quiet", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["methods"]) == list(ARMS) and set(DEFAULT_ARMS) < set(ARMS)
    assert "maporl_beta0_only" in capsys.readouterr().out


def test_solo_warmup_trains_alone_first_then_discusses_from_those_adapters(tmp_path, monkeypatch):
    """maporl_solo_warmup: a third of the minutes with one turn (every agent alone, its own adapter), then the full
    discussion for the rest, starting from the solo phase's checkpoint."""
    from maporl import trainer
    from maporl.study import reproduce as rep

    calls = []

    def fake_train(cfg, run_dir, quiet=False, final_eval=True):
        calls.append(
            (cfg.discussion.num_agents, cfg.discussion.turns, cfg.train.minutes, cfg.train.init_from, run_dir)
        )
        return {"checkpoint": run_dir / "checkpoints" / "step_000004"}

    monkeypatch.setattr(trainer, "train", fake_train)
    cfg, study = load_study(None, ["train.minutes=30", "reproduce.solo_warmup_share=0.25"])
    ckpt, team_cfg = rep._train("maporl_solo_warmup", cfg, tmp_path, True, solo_share=study.solo_warmup_share)
    solo = tmp_path / "solo"
    assert calls == [(3, 1, 7.5, "", solo), (3, 3, 22.5, str(solo / "checkpoints" / "step_000004"), tmp_path)]
    assert ckpt == tmp_path / "checkpoints" / "step_000004" and team_cfg.discussion.turns == 3
    assert load_config(tmp_path / "config.yaml").train.init_from == calls[1][3]  # the run says where it started


def test_incentive_table_pools_each_runs_means_over_seeds():
    """The incentives table: event rate / advantage change per discussing method, averaged over seeds (a key missing
    in one seed, e.g. an event that never fired there, averages over the seeds that have it); single agents and the
    untrained team get no row."""
    from maporl.study.tables import incentives_blocks

    def seed(rate: float, delta: float | None, kept: float) -> dict:
        inc = {"incentive/corrective/self_fix": rate, "incentive/corrective/adopt": 0.0, "incentive_adv/kept": kept}
        return {"incentives": inc | ({"incentive_adv/corrective/self_fix": delta} if delta is not None else {})}

    results = {"methods": {
        "untrained": {"per_seed": [{"seed": 0}]},
        "single_agent_rl": {"per_seed": [{"incentives": {"incentive/corrective/self_fix": 0.0}}]},
        "maporl_alpha1_only": {"per_seed": [seed(0.02, 0.5, 0.8), seed(0.04, None, 0.6)]},
    }}  # fmt: skip
    _, table, _ = incentives_blocks(results)
    (cells,) = table.rows  # one row: single agents and the untrained team have none
    assert cells[:3] == ["maporl_alpha1_only", "0.0%", "3.0% / +0.50"] and cells[-2:] == ["70%", "–"]
    assert incentives_blocks({"methods": {"untrained": {"per_seed": [{"seed": 0}]}}}) == []


def test_the_eval_format_is_what_team_metrics_writes():
    from maporl.evaluation import EVAL_KEYS, team_metrics
    from maporl.records import Answer, Problem, Transcript
    from maporl.tasks import get_task

    answers = tuple(tuple(Answer(i, t, (), "", p) for i, p in enumerate(row)) for t, row in enumerate([["3", "1"]]))
    metrics = team_metrics([Transcript(Problem("p", "q", "3", "t"), answers)], get_task("arith_chain"))
    assert tuple(metrics) == EVAL_KEYS and set(evaluation(0.5)) == set(EVAL_KEYS)


def test_an_evaluation_in_another_format_is_refused_in_one_line_naming_it(tmp_path, monkeypatch):
    """A comparison whose eval.json lacks a key of the current format (here correct_per_problem) is not read back:
    one line names the file and how to write it again."""
    from maporl.study import reproduce as rep

    def fake_train(method, cfg, run_dir, quiet, steps=0, solo_share=0.0):
        _metrics(run_dir, [1.0])
        return None, cfg

    _fake_runs(monkeypatch, fake_train, {})
    cfg = load_study(None, ["reproduce.methods=[untrained,maporl]"])
    rep.reproduce(*cfg, tmp_path, quiet=True)
    saved = tmp_path / "maporl" / "seed0" / "eval_train_task" / "eval.json"
    saved.write_text(
        json.dumps({k: v for k, v in json.loads(saved.read_text()).items() if k != "correct_per_problem"})
    )
    with pytest.raises(UsageError) as e:
        rep.reproduce(*cfg, tmp_path, resume=True, quiet=True)
    assert str(e.value) == (
        f"{saved} is in a format this version of maporl does not read (no correct_per_problem); evaluate the team "
        "again to write it"
    )


def test_claim_b_trials_change_only_what_they_name_and_a_shared_adapter_is_evaluated_shared():
    """maporl_epochs2 / maporl_wide / maporl_shared: MAPoRL's config with one change each (the same 32 discussions a
    step for maporl_wide); a run trained with one shared adapter is evaluated with that layout."""
    from maporl.config import to_dict, with_overrides
    from maporl.team import team_config

    cfg = load_config(None)
    trial = {m: with_overrides(cfg, ARMS[m].overrides) for m in ("maporl_epochs2", "maporl_wide", "maporl_shared")}
    assert (trial["maporl_epochs2"].algo.epochs, trial["maporl_epochs2"].algo.minibatches) == (2, 2)
    wide = trial["maporl_wide"]
    assert (wide.train.problems_per_step, wide.algo.rollouts_per_problem) == (16, 2)
    assert wide.train.problems_per_step * wide.algo.rollouts_per_problem == (
        cfg.train.problems_per_step * cfg.algo.rollouts_per_problem
    )
    assert not set(trial) & set(DEFAULT_ARMS)
    for m, t in trial.items():
        assert team_config(cfg, to_dict(t)).discussion.adapters == ("shared" if m == "maporl_shared" else "per_agent")


def test_the_shared_adapter_trial_trains_and_evaluates_with_a_tiny_model(tiny_model_dir, tmp_path):
    """maporl_shared for real on the random 1M model: one adapter saved, and reproduce's evaluation loads it."""
    from maporl.study import reproduce as rep

    ckpt, team_cfg = rep._train("maporl_shared", tiny_cfg(tiny_model_dir), tmp_path / "run", quiet=True)
    assert [p.name for p in ckpt.glob("adapter_*.safetensors")] == ["adapter_shared.safetensors"]
    m = rep._evaluate(team_cfg, ckpt, "arith_chain", tmp_path / "eval")
    assert len(m["acc_per_turn"]) == 2 and len(m["problem_ids"]) == 2


def test_a_trial_run_on_fewer_seeds_stays_in_the_comparisons_tables(tmp_path, monkeypatch):
    """A trial run on seed 0 only, into a comparison of two seeds: a later --resume of the comparison reads it back
    without running anything, and its claims row pairs it with seed 0 of single-agent RL."""
    from maporl.study import reproduce as rep

    trained = []

    def fake_train(method, cfg, run_dir, quiet, steps=0, solo_share=0.0):
        trained.append((method, cfg.seed))
        _metrics(run_dir, [1.0])
        return None, cfg

    _fake_runs(monkeypatch, fake_train, {"untrained": 0.4, "single_agent_rl": 0.6, "maporl_shared": 0.7})
    three = "reproduce.methods=[untrained,single_agent_rl,maporl]"
    rep.reproduce(*load_study(None, [three, "reproduce.seeds=[0,1]"]), tmp_path, quiet=True)
    trial = load_study(None, ["reproduce.methods=[maporl_shared]", "reproduce.seeds=[0]"])
    rep.reproduce(*trial, tmp_path, resume=True, quiet=True)
    assert trained[-1] == ("maporl_shared", 0) and len(trained) == 5
    results = rep.reproduce(*load_study(None, [three, "reproduce.seeds=[0,1]"]), tmp_path, resume=True, quiet=True)
    assert len(trained) == 5  # nothing run again
    assert [row["seed"] for row in results["methods"]["maporl_shared"]["per_seed"]] == [0]
    row = next(c for c in results["claims"] if "shared adapter" in c["claim"])
    assert (row["measured"], row["low"], row["high"]) == pytest.approx((10.0, 10.0, 10.0))
    assert (
        "Run on fewer seeds (claims rows pair them with the same seeds of the others): maporl_shared: 0."
        in (tmp_path / "results.md").read_text()
    )


def test_tables_only_rewrites_the_tables_from_finished_runs_and_trains_nothing(tmp_path, monkeypatch, capsys):
    from maporl.cli import main

    trained = []

    def fake_train(method, cfg, run_dir, quiet, steps=0, solo_share=0.0):
        trained.append(method)
        _metrics(run_dir, [1.0])
        return None, cfg

    _fake_runs(monkeypatch, fake_train, {})
    out = str(tmp_path / "cmp")
    assert main(["reproduce", "--tables-only", "--quiet", "--out", out]) == 2  # nothing there yet
    assert "--tables-only: " in capsys.readouterr().err
    assert main(["reproduce", "--methods", "untrained,maporl", "--quiet", "--out", out]) == 0
    (tmp_path / "cmp" / "results.md").unlink()
    assert main(["reproduce", "--seeds", "0,1", "--methods", "untrained,maporl", "--tables-only", "--out", out]) == 0
    assert trained == ["maporl"]  # seed 1 is missing, and not run
    assert main(["reproduce", "--seeds", "1", "--methods", "maporl", "--tables-only", "--quiet", "--out", out]) == 2
    assert "no finished run for seed(s) [1]" in capsys.readouterr().err  # not a StopIteration from an empty table
    table = (tmp_path / "cmp" / "results.md").read_text()
    assert "Partial" in table and "untrained 1, maporl 1" in table
