"""The learned-verifier pipeline end to end on the embedded base (CPU): roll out the untrained team on training
problems, label, balance, train and calibrate the verifier, then (optionally) load-test its HTTP server. Times each
stage. Re-run it after the embedded base is rebuilt: the verifier is trained from the base and on its team's answers.

    python bench/verifier_pipeline.py [--out runs/verifier] [--problems 2000] [--load-requests 2000]
    python bench/verifier_pipeline.py --smoke      # tiny sizes, seconds: what CI runs (tests/test_verifier.py)

Targets on the default sizes (the criteria under which the learned verifier is trusted as a reward, docs/verifier.md):
ROC-AUC >= 0.95 and ECE <= 0.05 on the test split, the pipeline without the load test in <= 10 minutes here.
Last line: one JSON object: out, smoke, gen_data_s, balance_train_s, accuracy, roc_auc, ece, num_eval,
num_calibration, calibration, own_solve_rate, roc_auc_own_right, roc_auc_own_wrong, steps, sanity (what is wrong
with the figures; exit status 1 unless empty), and with --load-requests also load_test and load_test_s.
--smoke: 40 problems, one epoch, 64 practice rows, into a new temporary directory unless --out, each command in this
process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("accuracy", "roc_auc", "ece", "num_eval", "num_calibration", "calibration", "own_solve_rate")


IN_PROCESS = False  # --smoke: each command in this process (a fresh `python -m maporl` costs seconds of imports)


def maporl(*args: str) -> None:
    if IN_PROCESS:
        from maporl.cli import main as cli

        if cli(list(args)):
            raise SystemExit(f"verifier_pipeline: maporl {' '.join(args)} failed")
        return
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "maporl", *args], check=True, cwd=ROOT, env=env)


def sanity(metrics: dict) -> list[str]:
    """What is wrong with a metrics.json on any data, however small: missing keys, figures out of their range."""
    problems = [f"missing {k}" for k in KEYS if k not in metrics]
    for key in ("accuracy", "roc_auc", "ece", "own_solve_rate"):
        value = metrics.get(key)
        if value is not None and not 0 <= value <= 1:
            problems.append(f"{key}={value} outside [0, 1]")
    calibration = metrics.get("calibration", {})
    if not all(isinstance(w, float) and abs(w) < 1e6 for w in calibration.get("weights", [None])):
        problems.append(f"calibration weights {calibration.get('weights')} not finite numbers")
    if metrics.get("num_eval", 0) < 2:
        problems.append("fewer than 2 test rows")
    return problems


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="directory for the data and the verifier (default: a new runs/verifier-<time>)")
    ap.add_argument("--problems", type=int, default=2000, help="training problems the team discusses (gen-data)")
    ap.add_argument("--load-requests", type=int, default=0, help="requests of the load test (0: no load test)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (40 problems, 1 epoch, 64 practice rows)")
    args = ap.parse_args(argv)
    global IN_PROCESS
    IN_PROCESS = args.smoke
    out = Path(args.out or (tempfile.mkdtemp(prefix="verifier-smoke-") if args.smoke else "runs/verifier"))
    if (out / "model").exists():
        raise SystemExit(f"verifier_pipeline: {out}/model exists; pass --out another/dir")
    problems = 40 if args.smoke else args.problems
    train_flags = ["--epochs", "1", "--practice", "64", "--batch-size", "16"] if args.smoke else []
    stages = {}
    t0 = time.time()
    maporl("verifier", "gen-data", "--quiet", "--problems", str(problems), "--out", str(out / "raw.jsonl"))
    stages["gen_data_s"] = round(time.time() - t0, 1)
    t0 = time.time()
    maporl("verifier", "balance", str(out / "raw.jsonl"), "--out", str(out / "balanced.jsonl"))
    maporl("verifier", "train", str(out / "balanced.jsonl"), "--out", str(out / "model"), "--quiet", *train_flags)
    stages["balance_train_s"] = round(time.time() - t0, 1)
    metrics = json.loads((out / "model" / "metrics.json").read_text())
    result = {"out": str(out), "smoke": args.smoke, **stages} | {k: metrics.get(k) for k in KEYS}
    result |= {k: metrics.get(k) for k in ("roc_auc_own_right", "roc_auc_own_wrong", "steps")}
    if args.load_requests:
        t0 = time.time()
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "verifier_load.py"), "--model", str(out / "model"),
             "--requests", str(args.load_requests)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        result["load_test"] = json.loads(done.stdout.strip().splitlines()[-1])
        result["load_test_s"] = round(time.time() - t0, 1)
    result["sanity"] = sanity(metrics)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(1 if main()["sanity"] else 0)
