"""`maporl verifier …`: gen-data, balance, train, serve (the learned-verifier pipeline)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from maporl.cli.args import config_from_args, team_config_and_generator
from maporl.errors import UsageError

# `verifier train` flags: shortcuts for config keys (`maporl config --keys` lists them with their help).
TRAIN_FLAGS = {
    "kind": "verifier_train.kind",
    "base": "verifier_train.base",
    "epochs": "verifier_train.epochs",
    "lr": "verifier_train.lr",
    "lr_final_ratio": "verifier_train.lr_final_ratio",
    "samples": "verifier_train.samples",
    "score": "verifier_train.score",
    "practice": "verifier_train.practice",
    "batch_size": "verifier_train.batch_size",
    "minutes": "verifier_train.minutes",
    "task": "task.name",
    "seed": "seed",
}


def add_parser(sub) -> None:
    v = sub.add_parser("verifier", help="learned verifier: gen-data, balance, train, serve")
    vs = v.add_subparsers(dest="verifier_command", metavar="SUBCOMMAND")
    g = vs.add_parser("gen-data", help="roll out the team and label every (question, response) by ground truth")
    g.add_argument("--out", required=True, help="output JSONL file")
    g.add_argument("--checkpoint", help="a trained run/checkpoint or HF model dir (default: the shipped base)")
    g.add_argument("--task", help="task (task.name; default arith_chain); problems come from its train split")
    g.add_argument("--problems", type=int, default=2000, help="problems to discuss (default 2000)")
    g.add_argument("--seed", type=int, help="master seed: picks the problems and sampling (seed, default 0)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("overrides", nargs="*", metavar="section.key=value")
    b = vs.add_parser("balance", help="deduplicate and balance classes per question")
    b.add_argument("data", help="JSONL from gen-data")
    b.add_argument("--out", required=True, help="output JSONL file")
    b.add_argument("--seed", type=int, default=0)
    t = vs.add_parser("train", help="train a P(correct) verifier; writes a HF directory and metrics.json")
    t.add_argument("data", help="balanced JSONL")
    t.add_argument("--out", required=True, help="output directory")
    t.add_argument("--config", help="YAML config file (its verifier_train section; see `maporl config --keys`)")
    t.add_argument("--base", help="base model directory (verifier_train.base; default: the shipped tiny base)")
    t.add_argument("--kind", choices=["generative", "classifier"], help="verifier_train.kind (default generative)")
    t.add_argument("--epochs", type=int, help="verifier_train.epochs (default 3)")
    t.add_argument("--lr", type=float, help="peak learning rate (verifier_train.lr, default 1e-3)")
    t.add_argument("--lr-final-ratio", type=float, help="decay to lr x this (verifier_train.lr_final_ratio, 0.1)")
    t.add_argument("--samples", type=int, help="generative: solutions per score (verifier_train.samples, 1)")
    t.add_argument("--score", choices=["answer", "verdict"], help="generative: verifier_train.score (default answer)")
    t.add_argument("--practice", type=int, help="generative: synthetic practice rows (verifier_train.practice)")
    t.add_argument("--task", help="task the practice rows come from (task.name; default arith_chain)")
    t.add_argument("--batch-size", type=int, help="rollout rows per step (verifier_train.batch_size, 32)")
    t.add_argument("--minutes", type=float, help="wall-clock budget (verifier_train.minutes; 0: none)")
    t.add_argument("--seed", type=int, help="master seed (seed)")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("overrides", nargs="*", metavar="section.key=value")
    s = vs.add_parser("serve", help="serve a verifier over HTTP (FastAPI): POST /score, GET /health")
    s.add_argument("--model", required=True, help="verifier directory from `maporl verifier train`")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> None:
    command = getattr(args, "verifier_command", None)
    if command == "gen-data":
        return _gen_data(args)
    if command == "balance":
        from maporl.verifiers.data import balance, read_rows, write_rows

        rows, counts = balance(read_rows(Path(args.data)), args.seed)
        if not rows:
            raise UsageError(f"no question in {args.data} has both correct and wrong responses; generate more data")
        write_rows(Path(args.out), rows)
        print(json.dumps(counts, indent=2))
        print(f"wrote {counts['output']} rows ({counts['output_correct']} correct) to {args.out}")
        return None
    if command == "train":
        from maporl.verifiers.data import read_rows
        from maporl.verifiers.train import practice_for, train_verifier

        cfg = config_from_args(args, flag_keys=TRAIN_FLAGS)
        rows = read_rows(Path(args.data))
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise UsageError(f"{out} is not empty; pass a new --out directory")
        metrics = train_verifier(rows, practice_for(cfg), out, cfg, quiet=args.quiet)
        print(json.dumps(metrics, indent=2))
        print(f"wrote {out} (metrics.json, reliability.png)")
        return None
    if command == "serve":
        from maporl.verifiers.server import serve

        print(f"maporl verifier: serving {args.model} on http://{args.host}:{args.port} (POST /score, GET /health)")
        serve(args.model, args.host, args.port, args.device)
        return None
    raise UsageError("choose a verifier subcommand: gen-data, balance, train or serve; see `maporl verifier --help`")


def _gen_data(args: argparse.Namespace) -> None:
    from maporl.discussion import run as discuss
    from maporl.tasks import get_task
    from maporl.utils import progress
    from maporl.verifiers.data import label_rows, write_rows

    if args.problems < 1:
        raise UsageError("--problems must be >= 1")
    args.num_agents = args.turns = args.config = None
    cfg, generator = team_config_and_generator(args)
    task = get_task(cfg.task.name)
    problems = task.sample(args.problems, seed=10_000 + cfg.seed, split="train")
    rows = []
    with progress(len(problems), "gen-data", quiet=args.quiet) as bar:
        for start in range(0, len(problems), 128):
            part = problems[start : start + 128]
            rows += label_rows(discuss(part, task, generator, cfg.discussion, cfg.seed, 0, start), task)
            bar.advance(f"{sum(r['label'] for r in rows) / len(rows):.0%} correct", n=len(part))
    n = write_rows(Path(args.out), rows)
    print(f"wrote {n} labelled responses ({sum(r['label'] for r in rows)} correct) to {args.out}")
