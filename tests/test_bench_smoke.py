"""Every benchmark in bench/ still runs: its --smoke mode (tiny sizes, seconds) ends with the one-line JSON object its
docstring documents, with every key named there. In the unit tier: each script has a smoke check here, its docstring
names its smoke mode and its last line's keys, and every name it imports from maporl (or from a sibling script)
exists; the runs themselves, in a subprocess with PYTHONPATH=src, are slow where they take more than a few seconds.
gpu_check.py and verifier_pipeline.py have their own tests, which read more than the last line."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
UPDATE_OPTIONS = ("plain", "activation_checkpointing", "autocast_bf16", "micro_batch_tokens", "all")


@dataclass(frozen=True)
class Smoke:
    args: tuple[str, ...]
    keys: tuple[str, ...]  # what the last line must have
    documented: tuple[str, ...] = ()  # what the docstring must name, where not the keys themselves
    slow: bool = False  # more than a few seconds
    needs: str | None = None  # an optional package without which the script cannot run
    elsewhere: str | None = None  # the test that runs the smoke mode already


SMOKES = {
    "gpu_check.py": Smoke(
        ("--smoke",),
        ("phase", "failed"),
        elsewhere="tests/test_gpu_check.py::test_the_cpu_form_runs_every_phase",
    ),
    "memory.py": Smoke(
        ("--smoke",),
        (
            *(f"update_{what}_{o}" for o in UPDATE_OPTIONS for what in ("peak_mib", "seconds")),
            *(f"update_peak_ratio_{o}_vs_plain" for o in UPDATE_OPTIONS),
            "update_tokens",
            "rss_mib_1_agent_smollm2",
            "rss_mib_4_agents_smollm2",
            "rss_ratio_4v1_smollm2",
            "model",
            "minutes",
        ),
        documented=(
            "update_peak_mib_<option>",
            "update_seconds_<option>",
            "update_peak_ratio_<option>_vs_plain",
            *UPDATE_OPTIONS,
            "update_tokens",
            "rss_mib_1_agent_smollm2",
            "rss_mib_4_agents_smollm2",
            "rss_ratio_4v1_smollm2",
            "model",
            "minutes",
        ),
        slow=True,
    ),
    "ray_scaling.py": Smoke(
        ("--smoke",),
        (
            "rollout_ratio_2w_vs_1w",
            "steps_per_min_ratio_ray_vs_local",
            "steps_per_min_ratio_async_vs_sync",
            "ray_startup_s",
            "local_startup_s",
            "rollout_s",
            "step_s",
        ),
        slow=True,
        needs="ray",
    ),
    "serve_load.py": Smoke(
        ("--smoke",),
        (
            "requests",
            "errors",
            "requests_per_s",
            "p50_ms",
            "p99_ms",
            "sequential_requests_per_s",
            "batched_over_sequential",
        ),
        elsewhere="tests/test_serve.py::test_the_load_benchmark_smoke_run_serves_the_embedded_team_without_errors",
    ),
    "throughput.py": Smoke(
        ("--smoke",),
        (
            "rollout_tokens_per_s_1_agent",
            "rollout_tokens_per_s_3_agents",
            "rollout_ratio_3v1",
            "decode_tokens_per_s_3_agents",
            "decode_tokens_per_s_base",
            "decode_ratio_vs_base",
            "rss_mib_1_agent",
            "rss_mib_4_agents_shared_base",
            "rss_mib_4_copies",
            "rss_ratio_4v1",
            "rss_ratio_4copies_v1",
            "grpo_samples_per_s_maporl",
            "grpo_samples_per_s_trl",
            "grpo_samples_per_s_ratio_vs_trl",
            "phase_seconds_default_config",
            "update_ratio_vs_generation",
            "minutes",
            "overrides",
        ),
        slow=True,
    ),
    "train_benchmark.py": Smoke(
        ("--smoke", "--out", "{tmp}/bench"),
        (
            "untrained_acc_per_turn",
            "trained_acc_per_turn",
            "final_gain_vs_untrained_points",
            "trained_final_minus_turn0_points",
            "untrained_final_minus_turn0_points",
            "num_problems",
            "minutes",
            "steps",
            "seconds_per_step",
            "seconds_per_step_split",
        ),
        slow=True,
    ),
    "verifier_load.py": Smoke(
        ("--smoke",),
        (
            "requests",
            "clients",
            "items_per_request",
            "errors",
            "wall_s",
            "requests_per_s",
            "p50_ms",
            "p99_ms",
            "max_ms",
        ),
        slow=True,
        needs="uvicorn",
    ),
    "verifier_pipeline.py": Smoke(
        ("--smoke",),
        (
            "out",
            "smoke",
            "gen_data_s",
            "balance_train_s",
            "accuracy",
            "roc_auc",
            "ece",
            "num_eval",
            "num_calibration",
            "calibration",
            "own_solve_rate",
            "roc_auc_own_right",
            "roc_auc_own_wrong",
            "steps",
            "sanity",
        ),
        elsewhere="tests/test_verifier.py::test_the_pipeline_benchmark_runs_on_the_embedded_base_with_sane_metrics",
    ),
}


def tree(script: str) -> ast.Module:
    return ast.parse((BENCH / script).read_text())


def test_every_benchmark_has_a_smoke_check():
    assert sorted(p.name for p in BENCH.glob("*.py")) == sorted(SMOKES)


@pytest.mark.parametrize("script", sorted(SMOKES))
def test_the_docstring_states_the_smoke_mode_and_the_last_lines_keys(script):
    doc = ast.get_docstring(tree(script))
    assert "--smoke" in doc and "Last line: one JSON object" in doc
    smoke = SMOKES[script]
    assert [k for k in smoke.documented or smoke.keys if k not in doc] == []


def defined(script: str) -> set[str]:
    return {n.name for n in tree(script).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


@pytest.mark.parametrize("script", sorted(SMOKES))
def test_every_name_a_benchmark_imports_from_maporl_exists(script):
    """What a refactor of maporl breaks first, found without running the benchmark: a moved module or name."""
    missing = []
    for node in ast.walk(tree(script)):
        if isinstance(node, ast.Import):
            wanted = [(a.name, None) for a in node.names if a.name.split(".")[0] == "maporl"]
        elif isinstance(node, ast.ImportFrom) and node.module and (BENCH / f"{node.module}.py").is_file():
            missing += [f"{node.module}.{a.name}" for a in node.names if a.name not in defined(f"{node.module}.py")]
            continue
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "maporl":
            wanted = [(node.module, a.name) for a in node.names]
        else:
            continue
        for module, name in wanted:
            try:
                found = importlib.import_module(module)
            except ModuleNotFoundError as e:
                if e.name.split(".")[0] != "maporl":  # an optional package this machine lacks
                    continue
                missing.append(module)
                continue
            if name and not hasattr(found, name):
                if not hasattr(found, "__path__") or importlib.util.find_spec(f"{module}.{name}") is None:
                    missing.append(f"{module}.{name}")  # (a package's submodule counts as one of its names)
    assert missing == []


def last_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(
            s,
            marks=[*([pytest.mark.slow] if smoke.slow else []), *([pytest.mark.ray] if smoke.needs == "ray" else [])],
        )
        for s, smoke in sorted(SMOKES.items())
        if not smoke.elsewhere
    ],
)
def test_the_smoke_run_ends_with_the_documented_json(script, tmp_path):
    smoke = SMOKES[script]
    if smoke.needs:
        pytest.importorskip(smoke.needs)
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    args = [a.format(tmp=tmp_path) for a in smoke.args]
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = last_line(done.stdout)
    assert [k for k in smoke.keys if k not in result] == []
    if script == "verifier_load.py":
        assert result["errors"] == 0 and result["requests"] == 16


@pytest.mark.parametrize("script", sorted(s for s, smoke in SMOKES.items() if smoke.elsewhere))
def test_a_smoke_run_checked_elsewhere_is_checked_there(script):
    path, name = SMOKES[script].elsewhere.split("::")
    source = (ROOT / path).read_text()
    assert f"def {name}(" in source and f'"{script}"' in source


def test_the_gpu_checks_smoke_flag_is_its_cpu_form(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--smoke", "--phases", "env", "--log", str(tmp_path / "log")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-2])["device"] == "cpu" and "tiny=True" in lines[0]
    assert last_line(lines[-1]) == {"phase": "done", "failed": []}
