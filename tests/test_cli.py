"""CLI tests: what a user types, what they see, exit codes. In-process (`maporl.cli.main` with captured output),
except the one test of the installed console script."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from maporl.cli import main
from maporl.models import EMBEDDED_DIR


@pytest.fixture
def maporl(capsys):
    """Run `maporl ARGS...` in this process; returns (returncode, stdout, stderr) like a finished subprocess."""

    def run(*args: str) -> SimpleNamespace:
        capsys.readouterr()  # drop what came before
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse errors exit from inside the parser
            code = e.code
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run


def test_console_script_runs_and_fails_in_one_line():
    """The installed `maporl` command itself: a bad key is one line on stderr and exit code 2, no traceback."""
    script = Path(sys.executable).parent / "maporl"
    r = subprocess.run([str(script), "eval", "discussion.num_agnets=3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "did you mean 'num_agents'" in r.stderr
    r = subprocess.run([sys.executable, "-m", "maporl", "config"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "num_agents: 3" in r.stdout


def test_discuss_prints_every_agent_at_every_turn(maporl, tiny_model_dir):
    r = maporl(
        "discuss",
        "What is 17+25-9?",
        "--checkpoint",
        str(tiny_model_dir),
        "--answer",
        "33",
        "--num-agents",
        "2",
        "--turns",
        "2",
        "generation.max_new_tokens=8",
    )
    assert r.returncode == 0, r.stderr
    for t in (0, 1):
        assert f"turn {t}" in r.stdout
    assert r.stdout.count("Agent 1:") == 2 and r.stdout.count("Agent 2:") == 2
    assert "final answers:" in r.stdout


def test_eval_writes_json_config_and_transcripts(maporl, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    r = maporl(
        "eval",
        "--checkpoint",
        str(tiny_model_dir),
        "--problems",
        "5",
        "--num-agents",
        "2",
        "--turns",
        "2",
        "--json",
        str(tmp_path / "m.json"),
        "--out",
        str(out),
        "--quiet",
        "generation.max_new_tokens=8",
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["num_problems"] == 5 and len(m["acc_per_turn"]) == 2 and len(m["wrong_to_right"]) == 1
    assert len(m["acc_per_agent_turn"]) == 2 and len(m["acc_per_agent_turn"][0]) == 2
    for key in ("majority_per_turn", "right_to_wrong", "consensus_per_turn"):
        assert key in m
    assert "num_agents: 2" in (out / "config.yaml").read_text()
    assert len((out / "transcripts.jsonl").read_text().splitlines()) == 5
    assert "majority vote" in r.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["eval", "discussion.num_agnets=3"], "did you mean 'num_agents'"),
        (["eval", "--checkpoint", "/nonexistent/model"], "a checkpoint directory, an export or a Hugging"),
        (["eval", "model.name_or_path=/nonexistent/model"], "model directory /nonexistent/model not found"),
        (["eval", "--task", "arith_chian"], "did you mean 'arith_chain'"),
        (["discuss", "hi", "--turns", "0"], "discussion.turns must be >= 1"),
        (["eval", "--task", "jsonl:/nonexistent.jsonl"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(maporl, args, expected):
    r = maporl(*args)
    assert r.returncode == 2
    assert expected in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_every_help_page_renders(maporl):
    import argparse

    from maporl.cli import parser

    def commands(p: argparse.ArgumentParser, path: tuple[str, ...] = ()):
        yield path
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from commands(child, (*path, name))

    paths = list(commands(parser()))
    assert ("compare",) in paths and ("model", "import-gguf") in paths
    for path in paths:  # a bare % in a help string crashed `maporl --help` with a TypeError
        r = maporl(*path, "--help")
        assert r.returncode == 0 and "usage: maporl" in r.stdout, (path, r.stderr)


def test_config_keys_lists_help(maporl):
    r = maporl("config", "--keys")
    assert r.returncode == 0
    assert "discussion.num_agents" in r.stdout and "number of agents" in r.stdout


def test_base_build_tiny_budget_makes_a_loadable_model(maporl, tmp_path):
    out = tmp_path / "base"
    flags = ["--steps", "3", "--batch-size", "4", "--probe-every", "2", "--probe-problems", "2", "--quiet"]
    r = maporl("base", "build", "--out", str(out), *flags)
    assert r.returncode == 0, r.stderr
    info = json.loads((out / "build_info.json").read_text())
    assert info["config"]["steps"] == 3 and info["config"]["seed"] == 0
    assert set(info["probes"]) == {"2", "3"}  # every k steps and the last
    assert set(info["probes"]["2"]) == {"arith_chain", "arith_word", "arith_word_unseen"}
    assert info["steps_taken"] in (2, 3) and "--probe-every 2" in info["command"]
    assert 1_000_000 < info["num_parameters"] < 3_000_000
    assert "bench/verifier_pipeline.py" in r.stdout  # what to re-measure on a new base
    r = maporl(
        "discuss",
        "What is 1+2-3?",
        "--checkpoint",
        str(out),
        "--num-agents",
        "1",
        "--turns",
        "1",
        "generation.max_new_tokens=4",
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not (EMBEDDED_DIR / "config.json").is_file(), reason="embedded base not built")
def test_shipped_base_discusses(maporl):
    r = maporl("discuss", "What is 17+25-9?", "--answer", "33")
    assert r.returncode == 0, r.stderr
    assert "The answer is" in r.stdout


def test_train_then_eval_and_discuss_the_checkpoint(maporl, tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    small = ["generation.max_new_tokens=6", "train.problems_per_step=2", "algo.rollouts_per_problem=2"]
    r = maporl(
        "train",
        "--out",
        str(run),
        "--max-steps",
        "2",
        "--quiet",
        "--num-agents",
        "2",
        "--turns",
        "2",
        f"model.name_or_path={tiny_model_dir}",
        "eval.num_problems=3",
        *small,
    )
    assert r.returncode == 0, r.stderr
    assert "checkpoint:" in r.stdout and "majority vote" in r.stdout
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "step_000002" / "state.json").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "time/step" in r] == [1, 2]
    assert {"reward/mean", "train/acc/turn1", "time/generation", "time/update", "loss/policy"} <= set(rows[0])
    # Every logged key is defined in docs/metrics.md (agent and turn indices written as {i} and {t}).
    docs = (Path(__file__).parents[1] / "docs" / "metrics.md").read_text()
    for key in {k for r in rows for k in r}:
        generic = re.sub(r"turn\d+", "turn{t}", re.sub(r"agent\d+", "agent{i}", key))
        assert f"`{generic}`" in docs, f"{key} is logged but not defined in docs/metrics.md"
    # A truncated answer has no final answer, so it is counted as invalid too.
    assert all(0.0 <= r["train/truncated_rate"] <= r["train/invalid_rate"] <= 1.0 for r in rows if "time/step" in r)
    assert "eval/acc/turn1" in rows[-1]
    # A run directory is a checkpoint: eval and discuss take its agents, turns and model from config.yaml.
    r = maporl(
        "eval",
        "--checkpoint",
        str(run),
        "--problems",
        "2",
        "--json",
        str(tmp_path / "m.json"),
        "--quiet",
        "--out",
        str(tmp_path / "ev"),
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["num_agents"] == 2 and m["num_turns"] == 2 and m["num_problems"] == 2
    r = maporl("discuss", "What is 1+2-3?", "--checkpoint", str(run / "checkpoints" / "step_000002"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("Agent 2:") == 2
    # An existing run is never overwritten without --resume.
    r = maporl("train", "--out", str(run), "--max-steps", "1", f"model.name_or_path={tiny_model_dir}")
    assert r.returncode == 2 and "--resume" in r.stderr
