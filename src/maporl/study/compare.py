"""`maporl compare RUN_A RUN_B`: two teams evaluated on the same problems with the same sampling seeds, and the
difference of their accuracy at every turn with a 95% paired bootstrap interval over problems (`stats.py`).

    from maporl import compare  # this module's compare_runs
    result = compare("runs/untrained", "runs/tiny", overrides=["task.name=arith_word"], problems=200)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from maporl.errors import UsageError

SHARED = ("task", "eval", "discussion")  # what both evaluations must agree on for the pairing to hold


def compare_runs(
    run_a: str | Path | None,
    run_b: str | Path | None,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    problems: int | None = None,
    quiet: bool = True,
) -> dict:
    """Evaluate two teams on the same problems and pair their accuracies problem by problem.

    Args:
        run_a, run_b: each a run directory (its latest checkpoint), a checkpoint directory, a Hugging Face model
            directory or None (the shipped embedded base); a run brings its own settings (`maporl.api.load_team`).
        config: a YAML file (or a shipped recipe's name) laid on both runs' settings.
        overrides: dotted config overrides for both, laid on `config`, e.g. `["task.name=arith_word", "eval.seed=7",
            "discussion.turns=2"]`.
        problems: evaluation problems (eval.num_problems); None keeps the runs' own.
        quiet: no progress bars.

    Returns:
        {run_a, run_b, task, problems, eval_seed, turns: one {turn, acc_a, acc_b, b_minus_a, low, high} per turn
        (points, 95% paired interval), eval_a, eval_b: each team's metrics (evaluation.team_metrics)}.

    Raises:
        UsageError: the two teams differ in task, eval or discussion settings (the pairing needs the same problems,
        agents and turns), naming the first setting that differs and how to align it.
    """
    from maporl.api import load_team
    from maporl.config import to_dict
    from maporl.evaluation import evaluate_team
    from maporl.study.stats import paired_difference
    from maporl.tasks import get_task

    both = [*overrides, *([f"eval.num_problems={problems}"] if problems is not None else [])]
    (cfg_a, gen_a), (cfg_b, gen_b) = (load_team(run, config, both) for run in (run_a, run_b))
    a, b = to_dict(cfg_a), to_dict(cfg_b)
    for section in SHARED:
        if a[section] != b[section]:
            diff = next(k for k in a[section] if a[section][k] != b[section][k])
            raise UsageError(
                f"the runs differ in {section}.{diff} ({a[section][diff]!r} vs {b[section][diff]!r}); pass the same "
                f"value for both, e.g. {section}.{diff}={a[section][diff]}"
            )
    task = get_task(cfg_a.task.name)
    metrics_a, _ = evaluate_team(cfg_a, task, gen_a, quiet=quiet)
    metrics_b, _ = evaluate_team(cfg_b, task, gen_b, quiet=quiet)
    rows = []
    for t in range(cfg_a.discussion.turns):
        diffs = [
            100 * (q[t] - p[t])
            for p, q in zip(metrics_a["acc_per_problem_turn"], metrics_b["acc_per_problem_turn"], strict=True)
        ]
        mean, low, high = paired_difference([diffs])
        rows.append({"turn": t, "acc_a": metrics_a["acc_per_turn"][t], "acc_b": metrics_b["acc_per_turn"][t],
                     "b_minus_a": mean, "low": low, "high": high})  # fmt: skip
    names = [str(run or "embedded") for run in (run_a, run_b)]  # None: the shipped base, model.name_or_path=embedded
    return {"run_a": names[0], "run_b": names[1], "task": task.name, "problems": cfg_a.eval.num_problems,
            "eval_seed": cfg_a.eval.seed, "turns": rows, "eval_a": metrics_a, "eval_b": metrics_b}  # fmt: skip


def format_comparison(result: dict) -> str:
    lines = [
        f"task {result['task']}, {result['problems']} problems (eval seed {result['eval_seed']}), the same for both",
        f"A = {result['run_a']}",
        f"B = {result['run_b']}",
        f"{'':<8}{'A':>8}{'B':>8}   B − A (points) [95% paired interval]",
    ]
    for r in result["turns"]:
        lines.append(
            f"turn {r['turn']:<3}{100 * r['acc_a']:>7.1f}%{100 * r['acc_b']:>7.1f}%   "
            f"{r['b_minus_a']:+.1f} [{r['low']:+.1f}, {r['high']:+.1f}]"
        )
    return "\n".join(lines)


def write_comparison(result: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    return out / "compare.json"
