"""`maporl compare`: two teams on the same problems, B − A per turn with a paired interval."""

from __future__ import annotations

import json

from conftest import tiny_cfg

from maporl import trainer
from maporl.cli import main


def test_a_team_against_itself_differs_by_nothing_and_a_trained_one_is_paired(tmp_path, tiny_model_dir, capsys):
    small = ["--problems", "6", "--num-agents", "2", "--turns", "2", "--quiet", "generation.max_new_tokens=8"]
    out = tmp_path / "same"
    assert main(["compare", str(tiny_model_dir), str(tiny_model_dir), "--out", str(out), *small]) == 0
    result = json.loads((out / "compare.json").read_text())
    assert [(r["b_minus_a"], r["low"], r["high"]) for r in result["turns"]] == [(0.0, 0.0, 0.0)] * 2
    assert (
        result["eval_a"]["problem_ids"] == result["eval_b"]["problem_ids"]
        and len(result["eval_a"]["problem_ids"]) == 6
    )
    assert "B − A (points) [95% paired interval]" in capsys.readouterr().out
    # The same through the Python API: paths and overrides, no command-line objects.
    from maporl.study.compare import compare_runs

    overrides = ["discussion.num_agents=2", "discussion.turns=2", "generation.max_new_tokens=8"]
    api = compare_runs(tiny_model_dir, tiny_model_dir, overrides=overrides, problems=6)
    assert api["turns"] == result["turns"] and api["eval_a"]["problem_ids"] == result["eval_a"]["problem_ids"]

    run = tmp_path / "run"
    trainer.train(tiny_cfg(tiny_model_dir, "train.max_steps=1"), run, quiet=True, final_eval=False)
    # The run discusses with 2 agents x 2 turns; the bare model would default to 3 x 3: refused, then aligned.
    assert main(["compare", str(tiny_model_dir), str(run), "--problems", "4", "--quiet"]) == 2
    assert "the runs differ in discussion.num_agents (3 vs 2)" in capsys.readouterr().err
    out = tmp_path / "trained"
    assert main(["compare", str(tiny_model_dir), str(run), "--out", str(out), *small]) == 0
    result = json.loads((out / "compare.json").read_text())
    for r in result["turns"]:
        assert (
            r["b_minus_a"] == round(100 * (r["acc_b"] - r["acc_a"]), 9)
            or abs(r["b_minus_a"] - 100 * (r["acc_b"] - r["acc_a"])) < 1e-9
        )
        assert r["low"] <= r["b_minus_a"] <= r["high"]
