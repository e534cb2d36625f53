"""The bad-input matrix: every case exits non-zero with one line that says what is wrong and how to fix it,
no traceback, and leaves an existing run untouched."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from maporl.cli import main

FIX_WORDS = (
    "pass",
    "use",
    "add",
    "fix",
    "choose",
    "e.g.",
    "must",
    "see",
    "drop",
    "install",
    "give",
    "split",
    "rebuild",
    "write",
)


@pytest.fixture
def env(tmp_path, tiny_model_dir, monkeypatch):
    """Files the cases refer to, by name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    no_template = tmp_path / "no_template"
    shutil.copytree(tiny_model_dir, no_template)
    for f in no_template.glob("chat_template.*"):
        f.unlink()
    tc = no_template / "tokenizer_config.json"
    tc.write_text(json.dumps({k: v for k, v in json.loads(tc.read_text()).items() if k != "chat_template"}))
    (tmp_path / "bad.jsonl").write_text('{"question": "x", "answer": 1}\n{oops\n')
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "huge.jsonl").write_text(json.dumps({"question": "x" * 1_100_000, "answer": 1}) + "\n")
    (tmp_path / "bad.yaml").write_text("discussion: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "typo.yaml").write_text("discusion:\n  num_agents: 3\n")
    (tmp_path / "not.gguf").write_text("not a gguf file")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "afile").write_text("x")
    run = tmp_path / "runs" / "old"
    (run / "checkpoints" / "step_000001").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    (run / "checkpoints" / "step_000001" / "state.json").write_text('{"step": 1, "files": {"x": {"bytes": 1}}}')
    (tmp_path / "runs" / "fresh").mkdir()
    (tmp_path / "runs" / "fresh" / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "runs" / "fresh" / "checkpoints").mkdir()
    return {"model": str(tiny_model_dir), "tmp": tmp_path}


M = "model.name_or_path={model}"
SMALL = ["discussion.num_agents=2", "discussion.turns=1", "generation.max_new_tokens=4", "train.problems_per_step=1"]
CASES = [
    # (id, argv, fragment of the message)
    ("misspelled key", ["config", "discussion.num_agent=3"], "did you mean 'num_agents'"),
    ("unknown section", ["config", "foo.bar=1"], "unknown config key"),
    ("misspelled section in file", ["config", "--config", "typo.yaml"], "did you mean 'discussion'"),
    ("wrong type", ["config", "discussion.num_agents=three"], "should be int"),
    ("wrong list length", ["config", "reward.alpha=[1]"], "must be a list of 2 values"),
    ("bad choice", ["config", "algo.name=dqn"], "choose one of"),
    ("bad convention", ["config", "reward.convention=bogus"], "choose one of"),
    ("zero agents", ["config", "discussion.num_agents=0"], "num_agents must be >= 1"),
    ("zero turns", ["config", "discussion.turns=0"], "turns must be >= 1"),
    ("negative lr", ["config", "algo.lr=-1"], "algo.lr must be > 0"),
    ("batch not divisible", ["config", "algo.minibatches=3"], "divisible by algo.minibatches"),
    ("negative temperature", ["config", "generation.temperature=-1"], "temperature must be >= 0"),
    ("zero new tokens", ["config", "generation.max_new_tokens=0"], "max_new_tokens must be >= 1"),
    ("gamma out of range", ["config", "reward.gamma=2"], "reward.gamma must be in [0, 1]"),
    ("train agent out of range", ["config", "train.agents=[5]"], "train.agents must name agents 0..2"),
    ("train turn out of range", ["config", "train.turns=[3]"], "train.turns must name turns"),
    ("negative keep_last", ["config", "train.keep_last=-1"], "keep_last must be >= 0"),
    ("override without =", ["config", "--config"], "expected one argument"),
    ("not an override", ["train", "--max-steps", "1", "oops"], "not of the form section.key=value"),
    ("missing config file", ["config", "--config", "nope.yaml"], "not found"),
    ("invalid yaml", ["config", "--config", "bad.yaml"], "invalid YAML"),
    ("yaml not a mapping", ["config", "--config", "list.yaml"], "must be a mapping"),
    ("negative minutes", ["train", "--minutes", "-1"], "train.minutes must be >= 0"),
    ("zero eval problems", ["eval", "--problems", "0"], "eval.num_problems must be >= 1"),
    ("missing model dir", ["eval", "model.name_or_path=/nope/model"], "not found"),
    ("no chat template", ["eval", "model.name_or_path=no_template"], "no chat template"),
    ("unknown task", ["eval", M, "--task", "arith_chian"], "did you mean 'arith_chain'"),
    ("malformed jsonl", ["eval", M, "--task", "jsonl:bad.jsonl"], "bad.jsonl:2: not valid JSON"),
    ("empty jsonl", ["eval", M, "--task", "jsonl:empty.jsonl"], "has no problems"),
    ("oversized jsonl line", ["eval", M, "--task", "jsonl:huge.jsonl"], "longer than"),
    ("missing jsonl", ["eval", M, "--task", "gsm8k:nope.jsonl"], "does not exist"),
    ("hub task offline", ["eval", M, "--task", "gsm8k"], "pass gsm8k:PATH"),
    ("unwritable out dir", ["train", M, "--out", "afile/run"], "cannot write to"),
    ("existing run", ["train", M, "--out", "runs/old"], "already has a run"),
    ("resume nothing", ["train", M, "--out", "runs/none", "--resume"], "nothing to resume"),
    ("resume and overwrite", ["train", M, "--out", "runs/old", "--resume", "--overwrite"], "contradict"),
    ("resume other run", ["train", M, "--out", "runs/a", "--resume", "runs/b"], "name different runs"),
    ("checkpoint path missing", ["eval", "--checkpoint", "nope"], "not a run directory"),
    ("damaged checkpoint", ["eval", "--checkpoint", "runs/old/checkpoints/step_000001"], "is damaged"),
    ("run without checkpoint", ["eval", "--checkpoint", "runs/fresh"], "no complete checkpoint"),
    ("gguf missing", ["model", "import-gguf", "--gguf", "nope.gguf", "--out", "m"], "not found"),
    ("gguf out not empty", ["model", "import-gguf", "--gguf", "not.gguf", "--out", "full"], "not empty"),
    ("not a gguf", ["model", "import-gguf", "--gguf", "not.gguf", "--out", "m2"], "cannot read"),
    ("base build zero steps", ["base", "build", "--out", "b", "--steps", "0"], "--steps"),
    (
        "verifier server unreachable",
        [
            "train",
            "--quiet",
            M,
            "--out",
            "elsewhere/run",
            *SMALL,
            "verifier.kind=http",
            "verifier.url=http://127.0.0.1:9",
        ],
        "unreachable after 3 tries",
    ),
    ("verifier dir missing", ["train", "--quiet", M, "--out", "elsewhere/r2", "verifier.kind=model"], "verifier.path"),
    ("reproduce bad seeds", ["reproduce", "--seeds", "a,b"], "comma-separated integers"),
    (
        "same-problems baseline without maporl",
        ["reproduce", "--methods", "single_agent_rl_same_problems", "--out", "runs/rep"],
        "add maporl to --methods",
    ),
    (
        "incentive arm without its no-incentive run",
        ["reproduce", "--methods", "maporl_alpha1_only", "--out", "runs/rep"],
        "add maporl_no_incentives to --methods",
    ),
    (
        "after-baseline arm with ppo",
        [
            "reproduce",
            "--methods",
            "maporl_no_incentives,maporl_alpha1_after_baseline",
            "--out",
            "runs/rep",
            "algo.name=ppo",
        ],
        "--methods maporl_alpha1_after_baseline: algo.incentive_placement=advantage",
    ),
]


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


def test_matrix_has_at_least_30_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_nonzero_and_harmless(env, capsys, argv, fragment):
    runs = env["tmp"] / "runs"
    before = tree_digest(runs)
    argv = [a.format(model=env["model"]) for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse errors exit from inside the parser
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("maporl: error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in err
    assert any(w in lines[0] for w in FIX_WORDS), f"no fix-it hint: {lines[0]}"
    assert tree_digest(runs) == before  # an existing run is never touched


def test_debug_shows_the_traceback(env):
    with pytest.raises(Exception, match="num_agents must be >= 1"):
        main(["--debug", "config", "discussion.num_agents=0"])
