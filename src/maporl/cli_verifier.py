"""`maporl verifier …`: gen-data, balance, train, serve (the learned-verifier pipeline)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from maporl.errors import UsageError

DEFAULT_PRACTICE = 16000  # synthetic practice rows for the generative verifier (docs/verifier.md: measured)


def add_parser(sub) -> None:
    v = sub.add_parser("verifier", help="learned verifier: gen-data, balance, train, serve")
    vs = v.add_subparsers(dest="verifier_command", metavar="SUBCOMMAND")
    g = vs.add_parser("gen-data", help="roll out the team and label every (question, response) by ground truth")
    g.add_argument("--out", required=True, help="output JSONL file")
    g.add_argument("--checkpoint", help="a trained run/checkpoint or HF model dir (default: the shipped base)")
    g.add_argument("--task", help="task (task.name; default arith_chain); problems come from its train split")
    g.add_argument("--problems", type=int, default=2000, help="problems to discuss (default 2000)")
    g.add_argument("--seed", type=int, default=0, help="picks the problems and sampling (default 0)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("overrides", nargs="*", metavar="section.key=value")
    b = vs.add_parser("balance", help="deduplicate and balance classes per question")
    b.add_argument("data", help="JSONL from gen-data")
    b.add_argument("--out", required=True, help="output JSONL file")
    b.add_argument("--seed", type=int, default=0)
    t = vs.add_parser("train", help="train a P(correct) verifier; writes a HF directory and metrics.json")
    t.add_argument("data", help="balanced JSONL")
    t.add_argument("--out", required=True, help="output directory")
    t.add_argument("--base", default="embedded", help="base model directory (default: the shipped tiny base)")
    t.add_argument(
        "--kind",
        default="generative",
        choices=["generative", "classifier"],
        help="generative: solves, then judges the answer against its own (default); classifier: a last-token head",
    )
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    t.add_argument(
        "--lr-final-ratio",
        type=float,
        default=0.1,
        help="the learning rate decays linearly to lr x this by the last step (1 = constant; default 0.1)",
    )
    t.add_argument(
        "--samples",
        type=int,
        default=1,
        help="generative: solutions per score (1 = greedy; k > 1 samples k and averages the scores, k times slower)",
    )
    t.add_argument(
        "--score",
        choices=["answer", "verdict"],
        default="answer",
        help="generative: what P(correct) is calibrated from: the likelihood the verifier gives the response's answer"
        " after its own solution (answer, default) or its Yes/No verdict (verdict); see docs/verifier.md",
    )
    t.add_argument(
        "--practice",
        type=int,
        help="generative: N synthetic rows on fresh training problems of --task (half right, half wrong): solving "
        f"practice beyond the rollouts, spread over the steps (default {DEFAULT_PRACTICE}; classifier: 0)",
    )
    t.add_argument("--task", help="task the practice rows come from (task.name; default arith_chain)")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--minutes", type=float, default=0.0, help="wall-clock budget for training (0: none)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quiet", action="store_true")
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
        from maporl.verifiers.train import train_verifier

        if args.practice is None:
            args.practice = DEFAULT_PRACTICE if args.kind == "generative" else 0
        if args.epochs < 1 or args.batch_size < 1 or args.samples < 1 or args.lr <= 0 or args.practice < 0:
            raise UsageError("--epochs, --batch-size and --samples must be >= 1, --practice >= 0 and --lr > 0")
        if not 0 <= args.lr_final_ratio <= 1:
            raise UsageError(f"--lr-final-ratio must be in [0, 1], got {args.lr_final_ratio}")
        if args.practice and args.kind != "generative":
            raise UsageError("--practice needs --kind generative (the classifier cannot solve; see docs/verifier.md)")
        rows = read_rows(Path(args.data))
        practice = None
        if args.practice:
            from maporl.config import Config
            from maporl.tasks import get_task
            from maporl.verifiers.data import practice_rows
            from maporl.verifiers.train import part_of

            task = get_task(args.task or Config().task.name)
            practice = practice_rows(task, args.practice, args.seed, keep=lambda q: part_of(q) == "train")
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise UsageError(f"{out} is not empty; pass a new --out directory")
        metrics = train_verifier(
            rows,
            args.base,
            out,
            args.epochs,
            args.lr,
            args.batch_size,
            args.seed,
            args.minutes,
            args.quiet,
            args.kind,
            args.samples,
            practice,
            args.lr_final_ratio,
            args.score,
        )
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
    from maporl.cli import _team_config_and_generator
    from maporl.discussion import run as discuss
    from maporl.tasks import get_task
    from maporl.utils import progress
    from maporl.verifiers.data import label_rows, write_rows

    if args.problems < 1:
        raise UsageError("--problems must be >= 1")
    args.num_agents = args.turns = args.config = None
    cfg, generator = _team_config_and_generator(args)
    task = get_task(cfg.task.name)
    problems = task.sample(args.problems, seed=10_000 + args.seed, split="train")
    rows = []
    with progress(len(problems), "gen-data", quiet=args.quiet) as bar:
        for start in range(0, len(problems), 128):
            part = problems[start : start + 128]
            rows += label_rows(discuss(part, task, generator, cfg.discussion, args.seed, 0, start), task)
            bar.advance(f"{sum(r['label'] for r in rows) / len(rows):.0%} correct", n=len(part))
    n = write_rows(Path(args.out), rows)
    print(f"wrote {n} labelled responses ({sum(r['label'] for r in rows)} correct) to {args.out}")
