"""`maporl compare RUN_A RUN_B`: two teams evaluated on the same problems with the same sampling seeds, and the
difference of their accuracy at every turn with a 95% paired bootstrap interval over problems (`stats.py`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from maporl.errors import UsageError

SHARED = ("task", "eval", "discussion")  # what both evaluations must agree on for the pairing to hold


def compare_runs(args: argparse.Namespace) -> dict:
    """Evaluate `args.run_a` and `args.run_b` (run directories, checkpoints or model directories) with the flags and
    overrides of `args` on top of each run's own settings; the two must then agree on task, eval and discussion."""
    from maporl.cli.args import team_config_and_generator
    from maporl.config import to_dict
    from maporl.evaluate import evaluate_team
    from maporl.study.stats import paired_difference
    from maporl.tasks import get_task

    teams = [
        team_config_and_generator(
            argparse.Namespace(**{**vars(args), "checkpoint": run, "overrides": [*args.overrides]})
        )
        for run in (args.run_a, args.run_b)
    ]
    (cfg_a, gen_a), (cfg_b, gen_b) = teams
    a, b = to_dict(cfg_a), to_dict(cfg_b)
    for section in SHARED:
        if a[section] != b[section]:
            diff = next(k for k in a[section] if a[section][k] != b[section][k])
            raise UsageError(
                f"the runs differ in {section}.{diff} ({a[section][diff]!r} vs {b[section][diff]!r}); pass the same "
                f"value for both, e.g. {section}.{diff}={a[section][diff]}"
            )
    task = get_task(cfg_a.task.name)
    metrics_a, _ = evaluate_team(cfg_a, task, gen_a, quiet=args.quiet)
    metrics_b, _ = evaluate_team(cfg_b, task, gen_b, quiet=args.quiet)
    turns = cfg_a.discussion.turns
    rows = []
    for t in range(turns):
        diffs = [
            100 * (q[t] - p[t])
            for p, q in zip(metrics_a["acc_per_problem_turn"], metrics_b["acc_per_problem_turn"], strict=True)
        ]
        mean, low, high = paired_difference([diffs])
        rows.append({"turn": t, "acc_a": metrics_a["acc_per_turn"][t], "acc_b": metrics_b["acc_per_turn"][t],
                     "b_minus_a": mean, "low": low, "high": high})  # fmt: skip
    return {"run_a": args.run_a, "run_b": args.run_b, "task": task.name, "problems": cfg_a.eval.num_problems,
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
