"""`maporl reproduce`: the paper's comparison in one command, with one budget per trained method.

Methods (each trained for the same wall-clock budget on the training task, then evaluated as a team of N agents x
T turns on the same held-out problems of the training task and of a transfer task):
- untrained: the base team;
- single_agent_rl: one agent trained alone on turn-0 answers with the same RL algorithm, copied into every seat;
- sft_traces: naive SFT on the base team's discussions whose final answers are all correct (algo.name=sft);
- maporl: co-training with the MAPoRL reward (the config as given);
- maporl_no_incentives: the same with corrective/persuasive weights 0;
- maporl_alpha1_only, maporl_beta0_only: the paper's incentive ablations, one incentive at weight 2 and the others 0
  (α1: corrective, for an agent that was wrong alone; β0: persuasive, for peers that were wrong too). They run only
  when named in `--methods`;
- single_agent_rl_same_problems: single_agent_rl trained for as many steps as maporl took on that seed, so on the same
  training problems with the same rollouts (the same seed and step draw the same problems). A wall-clock budget gives
  single-agent RL about N x T times more problems, since each of its steps samples one answer per rollout, not N x T.
Writes results.json, results.md, plots and report.html.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import time
import typing
from pathlib import Path

from maporl.claims import SAME_PROBLEMS, claims_markdown, measure_claims
from maporl.config import Config, ReproduceMethod, dump_yaml, to_dict, with_overrides

# Table order (as `reproduce.methods` lists them); SAME_PROBLEMS runs after maporl, whose step count it takes.
ALL_METHODS: tuple[str, ...] = typing.get_args(ReproduceMethod)
ABLATIONS = ("maporl_alpha1_only", "maporl_beta0_only")  # by name only: not part of the default comparison
METHODS = tuple(m for m in ALL_METHODS if m not in ABLATIONS)
ALONE = ["discussion.num_agents=1", "discussion.turns=1"]  # one agent, trained on its turn-0 answers
TRAINING_OVERRIDES = {
    "single_agent_rl": ALONE,
    SAME_PROBLEMS: [*ALONE, "train.minutes=0"],
    "maporl_no_incentives": ["reward.alpha=[0.0,0.0]", "reward.beta=[0.0,0.0]"],
    "maporl_alpha1_only": ["reward.alpha=[0.0,2.0]", "reward.beta=[0.0,0.0]"],
    "maporl_beta0_only": ["reward.alpha=[0.0,0.0]", "reward.beta=[2.0,0.0]"],
    # Maximum likelihood on the kept traces: one on-policy pass, no KL (the learner's ratio is then exactly 1).
    "sft_traces": ["algo.name=sft", "algo.epochs=1", "algo.minibatches=1", "algo.kl_coef=0.0"],
}


def _evaluate(cfg: Config, ckpt: Path | None, task_name: str, out: Path) -> dict:
    from maporl import checkpoint
    from maporl.evaluate import evaluate_team
    from maporl.rundir import write_transcripts
    from maporl.tasks import get_task
    from maporl.team import build_generator

    cfg = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, name=task_name))
    team = checkpoint.load_team(cfg, ckpt) if ckpt else None
    metrics, transcripts = evaluate_team(cfg, get_task(task_name), build_generator(cfg, team), quiet=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_transcripts(out / "transcripts.jsonl", transcripts)
    return metrics


def steps_trained(run: Path) -> int:
    """Training steps a finished run took (its last metrics row with a step time)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return max((r["step"] for r in rows if "time/step" in r), default=0)


def _train(method: str, cfg: Config, run_dir: Path, quiet: bool, steps: int = 0) -> tuple[Path, Config]:
    """Train one method (for `steps` steps where given, else the config's budget); returns its checkpoint and the
    team config to evaluate it with."""
    from maporl import trainer
    from maporl.rundir import save_config
    from maporl.team import team_config

    extra = [f"train.max_steps={steps}"] if steps else []
    train_cfg = with_overrides(cfg, [*TRAINING_OVERRIDES.get(method, []), *extra])
    save_config(run_dir, train_cfg)
    result = trainer.train(train_cfg, run_dir, quiet=quiet, final_eval=False)
    return result["checkpoint"], team_config(cfg, to_dict(train_cfg))  # a lone agent sits in every seat


def summarize(per_seed: list[dict]) -> dict:
    """Mean and std over seeds of every per-turn metric list (`any_correct_per_turn` only where every seed has it:
    eval.json files written before it existed lack it), and per behaviour its opportunities summed over seeds and
    its rate over them, per turn t >= 1 (where every seed has the behaviours)."""
    out: dict = {}
    if all("behaviour" in m for m in per_seed):
        out["behaviour"] = {
            name: {
                key: [sum(c) for c in zip(*[m["behaviour"][name][key] for m in per_seed], strict=True)]
                for key in ("count_per_turn", "events_per_turn")
            }
            for name in per_seed[0]["behaviour"]
        }
    keys = ["acc_per_turn", "majority_per_turn", "wrong_to_right", "right_to_wrong"]
    if all("any_correct_per_turn" in m for m in per_seed):
        keys.append("any_correct_per_turn")
    for key in keys:
        columns = list(zip(*[m[key] for m in per_seed], strict=True))
        out[key.replace("_per_turn", "") + "_mean"] = [statistics.mean(c) for c in columns]
        out[key.replace("_per_turn", "") + "_std"] = [statistics.pstdev(c) for c in columns]
    return out


def behaviour_markdown(results: dict) -> list[str]:
    """Per method, each behaviour's rate at turns 1..T-1 on the train task (seeds pooled), with its opportunities."""
    methods = {
        m: r["train_task"]["behaviour"] for m, r in results["methods"].items() if "behaviour" in r["train_task"]
    }
    if not methods:
        return []
    names = list(next(iter(methods.values())))
    lines = [
        "### Behaviours (train task; rate at turns 1, 2, … with its opportunities, pooled over seeds)\n",
        "| method | " + " | ".join(n.replace("_", " ") for n in names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for method, b in methods.items():
        cells = []
        for name in names:
            turns = zip(b[name]["events_per_turn"], b[name]["count_per_turn"], strict=True)
            cells.append(" / ".join(f"{100 * e / n:.0f}% ({n})" if n else "– (0)" for e, n in turns))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Definitions: docs/metrics.md (behaviours).", ""]
    return lines


def results_markdown(results: dict) -> str:
    lines = []
    for task_key in ("train_task", "transfer_task"):
        turns = len(next(iter(results["methods"].values()))[task_key]["acc_mean"])
        lines.append(f"### {results[task_key]} ({task_key.replace('_', ' ')})\n")
        head = "| method | " + " | ".join(f"turn {t}" for t in range(turns)) + " | final − turn 0 | majority (final) |"
        head += " wrong→right | right→wrong | ≥ 1 right (turn 0) |"
        lines += [head, "|---" * (turns + 6) + "|"]
        for method, m in results["methods"].items():
            s = m[task_key]
            cells = [f"{100 * a:.1f} ± {100 * d:.1f}" for a, d in zip(s["acc_mean"], s["acc_std"], strict=True)]
            gain = 100 * (s["acc_mean"][-1] - s["acc_mean"][0])
            w2r, r2w = sum(s["wrong_to_right_mean"]), sum(s["right_to_wrong_mean"])
            ceiling = f"{100 * s['any_correct_mean'][0]:.1f}" if "any_correct_mean" in s else "–"
            lines.append(
                f"| {method} | " + " | ".join(cells) + f" | {gain:+.1f} | {100 * s['majority_mean'][-1]:.1f} | "
                f"{100 * w2r:.1f} | {100 * r2w:.1f} | {ceiling} |"
            )
        lines.append("")
    lines += claims_markdown(results.get("claims", []))
    lines += behaviour_markdown(results)
    same = f" ({SAME_PROBLEMS}: as many steps as maporl)" if SAME_PROBLEMS in results["methods"] else ""
    if "seeds_done" in results:
        done = ", ".join(f"{m} {n}" for m, n in results["seeds_done"].items())
        lines.append(f"**Partial: the run is still going or was cut off.** Seeds evaluated so far: {done}.\n")
    lines.append(
        f"Seeds {results['seeds']}; {results['budget_min']} min of training per method{same}; "
        f"{results['eval_problems']} held-out problems per task (accuracy %, mean ± std over seeds; transitions: "
        "share of answers over all turn pairs; ≥ 1 right: problems where at least one agent is right at turn 0, the "
        "most a discussion can recover; – where an evaluation predates that metric)."
    )
    return "\n".join(lines) + "\n"


def _settings(cfg: Config) -> str:
    """What a resumed comparison must share with the run it continues: everything but the seeds and methods, which
    `--resume` may extend."""
    return dump_yaml(dataclasses.replace(cfg, reproduce=dataclasses.replace(cfg.reproduce, seeds=(0,), methods=())))


def _same_settings(saved: Path, cfg: Config) -> bool:
    """Does the comparison saved in `saved` have `cfg`'s settings? Read back through the config schema, so a setting
    added to maporl since (at its default) does not stop an older comparison from resuming."""
    from maporl.config import load_config
    from maporl.errors import UsageError

    try:
        return _settings(load_config(saved)) == _settings(cfg)
    except UsageError:  # a setting maporl no longer knows
        return False


def reproduce(cfg: Config, out: Path, resume: bool = False, quiet: bool = False) -> dict:
    """Run every (seed, method) of `cfg.reproduce` on `cfg.task.name`; with `resume`, a (seed, method) already
    evaluated in `out` is read back instead of run again (a long comparison survives an interruption: only the
    method in progress is redone)."""
    from maporl.errors import UsageError
    from maporl.report import write_report

    r = cfg.reproduce
    methods, seeds = r.methods or METHODS, list(r.seeds)
    task, transfer_task = cfg.task.name, r.transfer_task
    base = with_overrides(cfg, [f"train.minutes={r.budget_min}", "train.max_steps=100000"])
    saved = out / "config.yaml"
    if resume and saved.exists() and not _same_settings(saved, base):
        raise UsageError(f"{out} was run with other settings; resume with the same options, or pass a new --out")
    if SAME_PROBLEMS in methods and "maporl" not in methods:
        missing = [s for s in seeds if not (out / "maporl" / f"seed{s}" / "done.json").is_file()]
        if missing:
            raise UsageError(
                f"{SAME_PROBLEMS} trains for as many steps as maporl took, and {out} has no finished maporl run "
                f"for seed(s) {missing}: add maporl to --methods"
            )
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(_settings(base))
    started, earlier_minutes = time.time(), 0.0  # minutes of the (seed, method) runs read back, when resuming
    scores: dict[str, dict[str, list[dict]]] = {m: {"train_task": [], "transfer_task": []} for m in methods}

    def tables(partial: bool) -> dict:
        """Write results.json and results.md over the seeds evaluated so far (`seeds_done`, marked partial, until
        every (seed, method) has run)."""
        ran = [m for m in ALL_METHODS if m in scores and scores[m]["train_task"]]  # table order, not run order
        results = {
            "train_task": task,
            "transfer_task": transfer_task,
            "seeds": seeds,
            "budget_min": r.budget_min,
            "eval_problems": base.eval.num_problems,
            "minutes": round(earlier_minutes + (time.time() - started) / 60, 1),
            "methods": {m: {k: summarize(v) for k, v in scores[m].items()} for m in ran},
            "claims": measure_claims({m: scores[m] for m in ran}),
        }
        if partial:
            results["seeds_done"] = {m: len(scores[m]["train_task"]) for m in ran}
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "results.md").write_text(results_markdown(results))
        return results

    for seed in seeds:
        seed_cfg = dataclasses.replace(base, seed=seed)
        for method in sorted(methods, key=lambda m: m == SAME_PROBLEMS):  # stable: the rest keep their order
            run = out / method / f"seed{seed}"
            done = run / "done.json"
            if resume and done.is_file():
                earlier_minutes += json.loads(done.read_text()).get("minutes", 0.0)
                for key in scores[method]:
                    scores[method][key].append(json.loads((run / f"eval_{key}" / "eval.json").read_text()))
                if not quiet:
                    print(f"  {method:<29} seed {seed}: evaluated before, read back")
                continue
            if run.exists():  # a method interrupted part-way starts again from scratch
                shutil.rmtree(run)
            method_started = time.time()
            if method == "untrained":
                ckpt, team_cfg = None, seed_cfg
            else:
                if not quiet:
                    print(f"[{(time.time() - started) / 60:.1f} min] seed {seed}: training {method}")
                steps = max(1, steps_trained(out / "maporl" / f"seed{seed}")) if method == SAME_PROBLEMS else 0
                ckpt, team_cfg = _train(method, seed_cfg, run, quiet, steps)
            for key, name in (("train_task", task), ("transfer_task", transfer_task)):
                m = _evaluate(team_cfg, ckpt, name, run / f"eval_{key}")
                scores[method][key].append(m)
                if not quiet:
                    accs = " / ".join(f"{100 * a:.1f}" for a in m["acc_per_turn"])
                    print(f"  {method:<29} {name:<14} {accs}")
            minutes = round((time.time() - method_started) / 60, 1)
            done.write_text(
                json.dumps({"method": method, "seed": seed, "budget_min": r.budget_min, "minutes": minutes})
            )
            tables(partial=True)  # after every run: a comparison of hours shows its numbers, and keeps them if cut off
    results = tables(partial=False)
    write_report(out)
    return results
