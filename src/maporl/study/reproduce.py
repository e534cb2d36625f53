"""`maporl reproduce`: the paper's comparison in one command, with one budget per trained method.

Methods (each trained for the same wall-clock budget on the training task, then evaluated as a team of N agents x
T turns on the same held-out problems of the training task and of a transfer task):
- untrained: the base team;
- single_agent_rl: one agent trained alone on turn-0 answers with the same RL algorithm, copied into every seat;
- sft_traces: naive SFT on the base team's discussions whose final answers are all correct (algo.name=sft);
- maporl: co-training with the MAPoRL reward (the config as given);
- maporl_no_incentives: the same with corrective/persuasive weights 0;
- maporl_alpha1_only, maporl_beta0_only: the paper's incentive ablations, one incentive at weight 2 and the others 0
  (α1: corrective, for an agent that was wrong alone; β0: persuasive, for peers that were wrong too), each trained
  for as many steps as maporl_no_incentives took on that seed: the same problems and updates, only the reward
  differs (a wall-clock budget would also compare the hosts: a session's host can be 1.7x slower than another's);
- maporl_alpha1_after_baseline, maporl_beta0_after_baseline: the same arms with algo.incentive_placement=advantage:
  the incentive is added to each answer's advantage after the group baseline and std, which then neither absorb nor
  rescale it (step-matched the same way);
- maporl_solo_warmup: a trial for claim (b) at equal minutes: for `reproduce.solo_warmup_share` of the budget every
  agent answers alone (one turn, its own adapter), then co-training with discussions from those adapters for the
  rest;
- maporl_epochs2, maporl_wide, maporl_shared: more trials for claim (b) at equal minutes: two optimizer epochs of two
  minibatches over each step's rollouts (they are MAPoRL's cost: reuse them PPO-style); 16 problems x 2 rollouts a
  step instead of 8 x 4 (more problems for the same answers); one adapter shared by all agents (three times the
  data per adapter). These six run only when named in `--methods` (or with `--methods all`);
- single_agent_rl_same_problems: single_agent_rl trained for as many steps as maporl took on that seed, so on the same
  training problems with the same rollouts (the same seed and step draw the same problems). A wall-clock budget gives
  single-agent RL about N x T times more problems, since each of its steps samples one answer per rollout, not N x T.
Writes results.json, results.md, plots and report.html.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import typing
from pathlib import Path

from maporl.config import Config, ReproduceMethod, dump_yaml, to_dict, with_overrides
from maporl.study.claims import (
    INCENTIVE_TARGETS,
    SAME_PROBLEMS,
    SOLO_WARMUP,
    STEP_MATCHED,
    TRIALS_B,
    incentive_ablation,
    measure_claims,
)
from maporl.study.tables import per_seed, results_markdown, summarize

# Table order (as `reproduce.methods` lists them); SAME_PROBLEMS runs after maporl, whose step count it takes.
ALL_METHODS: tuple[str, ...] = typing.get_args(ReproduceMethod)
BY_NAME = (*INCENTIVE_TARGETS, *TRIALS_B)  # not part of the default comparison (`--methods all` runs them too)
METHODS = tuple(m for m in ALL_METHODS if m not in BY_NAME)
ALONE = ["discussion.num_agents=1", "discussion.turns=1"]  # one agent, trained on its turn-0 answers
ALPHA1_ONLY = ["reward.alpha=[0.0,2.0]", "reward.beta=[0.0,0.0]"]
BETA0_ONLY = ["reward.alpha=[0.0,0.0]", "reward.beta=[2.0,0.0]"]
AFTER_BASELINE = "algo.incentive_placement=advantage"
TRAINING_OVERRIDES = {
    "single_agent_rl": ALONE,
    SAME_PROBLEMS: ALONE,
    "maporl_no_incentives": ["reward.alpha=[0.0,0.0]", "reward.beta=[0.0,0.0]"],
    "maporl_alpha1_only": ALPHA1_ONLY,
    "maporl_beta0_only": BETA0_ONLY,
    "maporl_alpha1_after_baseline": [*ALPHA1_ONLY, AFTER_BASELINE],
    "maporl_beta0_after_baseline": [*BETA0_ONLY, AFTER_BASELINE],
    "maporl_epochs2": ["algo.epochs=2", "algo.minibatches=2"],
    "maporl_wide": ["algo.rollouts_per_problem=2", "train.problems_per_step=16"],
    "maporl_shared": ["discussion.adapters=shared"],
    # Maximum likelihood on the kept traces: one on-policy pass, no KL (the learner's ratio is then exactly 1).
    "sft_traces": ["algo.name=sft", "algo.epochs=1", "algo.minibatches=1", "algo.kl_coef=0.0"],
}


def _evaluate(cfg: Config, ckpt: Path | None, task_name: str, out: Path) -> dict:
    from maporl import checkpoint
    from maporl.evaluate import evaluate_team
    from maporl.records import write_transcripts
    from maporl.tasks import get_task
    from maporl.team import build_generator

    cfg = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, name=task_name))
    team = checkpoint.load_team(cfg, ckpt) if ckpt else None
    metrics, transcripts = evaluate_team(cfg, get_task(task_name), build_generator(cfg, team), quiet=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_transcripts(out / "transcripts.jsonl", transcripts)
    return metrics


def read_eval(out: Path, task_name: str) -> dict:
    """A saved evaluation. One written before eval.json kept `correct_per_problem` is recomputed from its transcripts
    where they are still on disk (the same discussions give the same metrics, plus the newer keys) and rewritten."""
    metrics = json.loads((out / "eval.json").read_text())
    saved = out / "transcripts.jsonl"
    if "correct_per_problem" not in metrics and saved.is_file():
        from maporl.evaluate import team_metrics
        from maporl.records import Transcript
        from maporl.tasks import get_task

        lines = saved.read_text().splitlines()
        metrics = team_metrics([Transcript.from_json(json.loads(x)) for x in lines if x.strip()], get_task(task_name))
        (out / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def run_stats(run: Path) -> dict:
    """A finished training run's steps, mean seconds per step and the means over its steps of every `incentive/*`
    and `incentive_adv/*` metric, from its metrics.jsonl ({} without one: the untrained team, or a run whose large
    files were not kept)."""
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        return {}
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    timed = [r for r in rows if "time/step" in r]
    if not timed:
        return {}
    mean = sum(r["time/step"] for r in timed) / len(timed)
    incentives: dict[str, list[float]] = {}  # the incentive_adv/* keys are logged only on steps where one fired
    for r in timed:
        for k, v in r.items():
            if k.startswith(("incentive/", "incentive_adv/")):
                incentives.setdefault(k, []).append(v)
    means = {k: round(sum(v) / len(v), 5) for k, v in incentives.items()}
    return {"steps": max(r["step"] for r in timed), "sec_per_step": round(mean, 3), "incentives": means}


def _stats(record: dict) -> dict:
    """The steps, seconds per step and incentive means a done.json holds (none for the untrained team)."""
    return {k: record[k] for k in ("steps", "sec_per_step", "incentives") if k in record}


def steps_trained(run: Path) -> int:
    """Training steps a finished run took: from its done.json (which is all a comparison kept in git has), else
    from its metrics.jsonl."""
    done = run / "done.json"
    saved = json.loads(done.read_text()).get("steps") if done.is_file() else None
    return saved if saved is not None else run_stats(run).get("steps", 0)


def _train(method: str, cfg: Config, run_dir: Path, quiet: bool, steps: int = 0) -> tuple[Path, Config]:
    """Train one method (for `steps` steps where given, else the config's budget); returns its checkpoint and the
    team config to evaluate it with."""
    from maporl import trainer
    from maporl.config import save_config
    from maporl.team import team_config

    extra = [f"train.max_steps={steps}", "train.minutes=0"] if steps else []
    if method == SOLO_WARMUP:  # every agent alone first (one turn each: a third of a step's cost), then discussions
        solo_min = cfg.reproduce.solo_warmup_share * cfg.train.minutes
        solo, _ = _train("maporl", with_overrides(cfg, ["discussion.turns=1", f"train.minutes={solo_min}"]),
                         run_dir / "solo", quiet)  # fmt: skip
        extra = [f"train.init_from={solo}", f"train.minutes={cfg.train.minutes - solo_min}"]
    train_cfg = with_overrides(cfg, [*TRAINING_OVERRIDES.get(method, []), *extra])
    save_config(run_dir, train_cfg)
    result = trainer.train(train_cfg, run_dir, quiet=quiet, final_eval=False)
    return result["checkpoint"], team_config(cfg, to_dict(train_cfg))  # a lone agent sits in every seat


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


def _finished(out: Path, method: str, seed: int) -> bool:
    """Was (seed, method) trained and evaluated in the comparison `out` (its done.json is written last)?"""
    return (out / method / f"seed{seed}" / "done.json").is_file()


def reproduce(cfg: Config, out: Path, resume: bool = False, quiet: bool = False, run_missing: bool = True) -> dict:
    """Run every (seed, method) of `cfg.reproduce` on `cfg.task.name`; with `resume`, a (seed, method) already
    evaluated in `out` is read back instead of run again (a long comparison survives an interruption: only the
    method in progress is redone). `run_missing=False` (with `resume`) only rewrites the tables and report from what
    `out` holds."""
    from maporl.errors import UsageError
    from maporl.study.report import write_report

    r = cfg.reproduce
    requested, seeds = r.methods or METHODS, list(r.seeds)
    task, transfer_task = cfg.task.name, r.transfer_task
    base = with_overrides(cfg, [f"train.minutes={r.budget_min}", "train.max_steps=100000"])
    saved = out / "config.yaml"
    if resume and saved.exists() and not _same_settings(saved, base):
        raise UsageError(f"{out} was run with other settings; resume with the same options, or pass a new --out")
    for method in requested:  # an arm whose settings cannot run fails now, not after hours of the others
        try:
            with_overrides(base, TRAINING_OVERRIDES.get(method, []))
        except UsageError as e:
            raise UsageError(f"--methods {method}: {e}") from None
    for method in (m for m in requested if m in STEP_MATCHED and STEP_MATCHED[m] not in requested):
        matched = STEP_MATCHED[method]
        missing = [s for s in seeds if not _finished(out, matched, s)]
        if missing:
            raise UsageError(
                f"{method} trains for as many steps as {matched} took, and {out} has no finished {matched} run "
                f"for seed(s) {missing}: add {matched} to --methods"
            )
    wanted = [(m, s) for s in seeds for m in requested]
    finished = {m for m in ALL_METHODS for s in seeds if _finished(out, m, s)}
    if not run_missing:
        if not finished:
            raise UsageError(
                f"--tables-only: {out} has no finished run for seed(s) {seeds}; name the seeds it ran (--seeds "
                "0,1,… with every seed, old and new), or drop --tables-only to train them"
            )
        requested = ()
    methods = list(requested)
    if resume:  # the comparison's other finished runs (e.g. trials run on fewer seeds) stay in its tables
        methods += [m for m in ALL_METHODS if m in finished and m not in requested]
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(_settings(base))
    started, earlier_minutes = time.time(), 0.0  # minutes of the (seed, method) runs read back, when resuming
    scores: dict[str, dict[str, list[dict]]] = {m: {"train_task": [], "transfer_task": []} for m in methods}
    runs: dict[str, list[dict]] = {m: [] for m in methods}  # per seed: steps, seconds per step, incentive means

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
            "methods": {
                m: {k: summarize(v) for k, v in scores[m].items()} | per_seed(scores[m], runs[m]) for m in ran
            },
            "claims": measure_claims({m: scores[m] for m in ran}),
            "incentive_ablation": incentive_ablation({m: scores[m]["train_task"] for m in ran}),
        }
        if partial:
            results["seeds_done"] = {m: len(scores[m]["train_task"]) for m in ran}
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "results.md").write_text(results_markdown(results))
        return results

    for seed in seeds:
        seed_cfg = dataclasses.replace(base, seed=seed)
        # A step-matched arm runs after the method it matches (stable: the rest keep their order).
        for method in sorted(methods, key=lambda m: m in STEP_MATCHED):
            run = out / method / f"seed{seed}"
            done = run / "done.json"
            if resume and done.is_file():
                record = json.loads(done.read_text())
                if "incentives" not in record and (stats := run_stats(run)):  # written before done.json kept these
                    record |= stats
                    done.write_text(json.dumps(record))
                earlier_minutes += record.get("minutes", 0.0)
                runs[method].append({"seed": seed, **_stats(record)})
                for key, name in (("train_task", task), ("transfer_task", transfer_task)):
                    scores[method][key].append({"seed": seed, **read_eval(run / f"eval_{key}", name)})
                if not quiet:
                    print(f"  {method:<29} seed {seed}: evaluated before, read back")
                continue
            if method not in requested:  # read back where it ran, not run here
                continue
            if run.exists():  # a method interrupted part-way starts again from scratch
                shutil.rmtree(run)
            method_started = time.time()
            if method == "untrained":
                ckpt, team_cfg = None, seed_cfg
            else:
                if not quiet:
                    print(f"[{(time.time() - started) / 60:.1f} min] seed {seed}: training {method}")
                matched = STEP_MATCHED.get(method)
                steps = max(1, steps_trained(out / matched / f"seed{seed}")) if matched else 0
                ckpt, team_cfg = _train(method, seed_cfg, run, quiet, steps)
            for key, name in (("train_task", task), ("transfer_task", transfer_task)):
                m = _evaluate(team_cfg, ckpt, name, run / f"eval_{key}")
                scores[method][key].append({"seed": seed, **m})
                if not quiet:
                    accs = " / ".join(f"{100 * a:.1f}" for a in m["acc_per_turn"])
                    print(f"  {method:<29} {name:<14} {accs}")
            minutes = round((time.time() - method_started) / 60, 1)
            record = {"method": method, "seed": seed, "budget_min": r.budget_min, "minutes": minutes, **run_stats(run)}
            done.write_text(json.dumps(record))
            runs[method].append({"seed": seed, **_stats(record)})
            tables(partial=True)  # after every run: a comparison of hours shows its numbers, and keeps them if cut off
    results = tables(partial=not all(_finished(out, m, s) for m, s in wanted))
    write_report(out)
    return results
