"""Benchmark of `maporl train` (default config) against the untrained team, measured side by side in one run.

    python bench/train_benchmark.py --minutes 30 [--out runs/bench] [overrides ...]
    python bench/train_benchmark.py --smoke   # seconds: 2 steps of 2 problems, 4 eval problems, in this process

1. evaluates the untrained team (shipped base) on eval.num_problems held-out problems (eval split: disjoint from
   training problems by construction; same problems for both evaluations);
2. runs `maporl train --minutes M` with the default config (plus overrides);
3. evaluates the trained team on the same problems, and prints accuracy per turn before/after, the gains, the
   number of steps and the mean step time split (generation / scoring / update).
Last line: one JSON object: untrained_acc_per_turn, trained_acc_per_turn, final_gain_vs_untrained_points,
trained_final_minus_turn0_points, untrained_final_minus_turn0_points, num_problems, minutes, steps,
seconds_per_step, seconds_per_step_split (generation, scoring, update).
--smoke checks that the three commands and the summary still run (tests/test_bench_smoke.py), not the figures:
SMOKE's overrides (2 training steps, 4 evaluation problems, short answers) come before yours, --out defaults to a new
temporary directory, and each command runs in this process instead of a fresh `python -m maporl.cli`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SMOKE = [
    "eval.num_problems=4",
    "discussion.turns=2",
    "train.problems_per_step=2",
    "algo.rollouts_per_problem=2",
    "generation.max_new_tokens=16",
    "train.max_steps=2",
]
IN_PROCESS = False  # --smoke: each command in this process


def maporl(*args: str) -> None:
    if IN_PROCESS:
        from maporl.cli import main as cli

        if cli(list(args)):
            sys.exit(f"maporl {' '.join(args)} failed")
        return
    subprocess.run([sys.executable, "-m", "maporl.cli", *args], check=True)


def main() -> None:
    global IN_PROCESS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--out", help="where the three runs go (default: runs/bench)")
    ap.add_argument("--smoke", action="store_true", help="seconds, tiny sizes: that all of it runs (CI)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.smoke:
        IN_PROCESS, args.overrides = True, [*SMOKE, *args.overrides]
    out = Path(args.out or (tempfile.mkdtemp(prefix="train-benchmark-smoke-") if args.smoke else "runs/bench"))
    out.mkdir(parents=True, exist_ok=True)

    maporl("eval", "--quiet", "--out", str(out / "untrained"), *args.overrides)
    maporl(
        "train",
        "--quiet",
        "--out",
        str(out / "train"),
        "--minutes",
        str(args.minutes),
        "train.max_steps=100000",
        *args.overrides,
    )  # the wall-clock budget ends the run
    maporl("eval", "--quiet", "--checkpoint", str(out / "train"), "--out", str(out / "trained"))

    before = json.loads((out / "untrained" / "eval.json").read_text())
    after = json.loads((out / "trained" / "eval.json").read_text())
    rows = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "time/step" in r]
    split = {k: statistics.mean(r[k] for r in steps) for k in ("time/generation", "time/scoring", "time/update")}
    turns = len(before["acc_per_turn"])
    print(f"{'':<22}" + "".join(f"{'turn ' + str(t):>9}" for t in range(turns)))
    for name, m in (("untrained team", before), ("MAPoRL-trained team", after)):
        print(f"{name:<22}" + "".join(f"{100 * a:>8.1f}%" for a in m["acc_per_turn"]))
    result = {
        "untrained_acc_per_turn": before["acc_per_turn"],
        "trained_acc_per_turn": after["acc_per_turn"],
        "final_gain_vs_untrained_points": 100 * (after["acc_per_turn"][-1] - before["acc_per_turn"][-1]),
        "trained_final_minus_turn0_points": 100 * (after["acc_per_turn"][-1] - after["acc_per_turn"][0]),
        "untrained_final_minus_turn0_points": 100 * (before["acc_per_turn"][-1] - before["acc_per_turn"][0]),
        "num_problems": after["num_problems"],
        "minutes": args.minutes,
        "steps": len(steps),
        "seconds_per_step": statistics.mean(r["time/step"] for r in steps),
        "seconds_per_step_split": split,
    }
    print(
        f"steps {len(steps)}, {result['seconds_per_step']:.1f} s/step: "
        + ", ".join(f"{k.split('/')[1]} {v:.2f} s" for k, v in split.items())
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
