"""`maporl reproduce`: the paper's comparison in one command, with one budget per trained method.

Every arm of `arms.ARMS` named in `reproduce.methods` (default: the paper's comparison) is trained on the training
task for the same wall-clock budget, or for as many steps as the arm it is step-matched to took on the seed, then
evaluated as a team of N agents x T turns on the same held-out problems of the training task and of a transfer task.
Writes results.json, results.md (the claims of `claims.py` with their targets), plots and report.html.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from maporl.config import Config, to_dict, with_overrides
from maporl.evaluation import read_eval, read_json
from maporl.study.arms import ARMS, DEFAULT_ARMS
from maporl.study.claims import incentive_ablation, measure_claims
from maporl.study.settings import ReproduceConfig, load_study, study_yaml
from maporl.study.tables import per_seed, results_markdown, summarize


def _evaluate(cfg: Config, ckpt: Path | None, task_name: str, out: Path) -> dict:
    from maporl import checkpoint
    from maporl.evaluation import evaluate_team
    from maporl.generation.registry import build_generator
    from maporl.records import write_transcripts
    from maporl.tasks import get_task

    cfg = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, name=task_name))
    team = checkpoint.load_team(cfg, ckpt) if ckpt else None
    metrics, transcripts = evaluate_team(cfg, get_task(task_name), build_generator(cfg, team), quiet=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_transcripts(out / "transcripts.jsonl", transcripts)
    return metrics


def read_done(run: Path, trained: bool) -> dict:
    """The record a finished (seed, method) wrote last, in its done.json: method, seed, budget and minutes, and for
    a trained arm its steps, seconds per step and incentive means (what a comparison kept in git resumes from)."""
    keys = ("method", "seed", "budget_min", "minutes", *(("steps", "sec_per_step", "incentives") if trained else ()))
    return read_json(run / "done.json", keys, f"delete {run} and resume the comparison to run it again")


def run_stats(run: Path) -> dict:
    """A finished training run's steps, mean seconds per step and the means over its steps of every `incentive/*`
    and `incentive_adv/*` metric, from its metrics.jsonl ({} without one: the untrained team)."""
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
    """Training steps a finished run took, from its done.json (which is all a comparison kept in git has)."""
    return read_done(run, trained=True)["steps"]


def _train(
    method: str, cfg: Config, run_dir: Path, quiet: bool, steps: int = 0, solo_share: float = 1 / 3
) -> tuple[Path, Config]:
    """Train one arm (for `steps` steps where given, else the config's budget); returns its checkpoint and the team
    config to evaluate it with. A solo warm-up arm spends `solo_share` of the budget with every agent alone."""
    from maporl import trainer
    from maporl.config import save_config
    from maporl.team import team_config

    arm = ARMS[method]
    extra = [f"train.max_steps={steps}", "train.minutes=0"] if steps else []
    if arm.solo_warmup:  # every agent alone first (one turn each: a third of a step's cost), then discussions
        solo_min = solo_share * cfg.train.minutes
        solo, _ = _train("maporl", with_overrides(cfg, ["discussion.turns=1", f"train.minutes={solo_min}"]),
                         run_dir / "solo", quiet)  # fmt: skip
        extra = [f"train.init_from={solo}", f"train.minutes={cfg.train.minutes - solo_min}"]
    train_cfg = with_overrides(cfg, [*arm.overrides, *extra])
    save_config(run_dir, train_cfg)
    result = trainer.train(train_cfg, run_dir, quiet=quiet, final_eval=False)
    return result["checkpoint"], team_config(cfg, to_dict(train_cfg))  # a lone agent sits in every seat


def _settings(cfg: Config, study: ReproduceConfig) -> str:
    """What a resumed comparison must share with the run it continues: everything but the seeds and methods, which
    `--resume` may extend."""
    return study_yaml(cfg, dataclasses.replace(study, seeds=(0,), methods=()))


def _same_settings(saved: Path, cfg: Config, study: ReproduceConfig) -> bool:
    """Does the comparison saved in `saved` have these settings? Read back like any config file (a key it leaves out
    takes its default), so what is compared is the settings, not the file's text."""
    from maporl.errors import UsageError

    try:
        return _settings(*load_study(saved)) == _settings(cfg, study)
    except UsageError:  # a setting maporl no longer knows
        return False


def _finished(out: Path, method: str, seed: int) -> bool:
    """Was (seed, method) trained and evaluated in the comparison `out` (its done.json is written last)?"""
    return (out / method / f"seed{seed}" / "done.json").is_file()


def reproduce(
    cfg: Config, study: ReproduceConfig, out: Path, resume: bool = False, quiet: bool = False, run_missing: bool = True
) -> dict:
    """Run every (seed, method) of `study` on `cfg.task.name`, each arm from `cfg`; with `resume`, a (seed, method)
    already evaluated in `out` is read back instead of run again (a long comparison survives an interruption: only
    the method in progress is redone). `run_missing=False` (with `resume`) only rewrites the tables and report from
    what `out` holds."""
    from maporl.errors import UsageError
    from maporl.study.report import write_report

    requested, seeds = study.methods or DEFAULT_ARMS, list(study.seeds)
    task, transfer_task = cfg.task.name, study.transfer_task
    base = with_overrides(cfg, [f"train.minutes={study.budget_min}", "train.max_steps=100000"])
    saved = out / "config.yaml"
    if resume and saved.exists() and not _same_settings(saved, base, study):
        raise UsageError(f"{out} was run with other settings; resume with the same options, or pass a new --out")
    for method in requested:  # an arm whose settings cannot run fails now, not after hours of the others
        try:
            with_overrides(base, ARMS[method].overrides)
        except UsageError as e:
            raise UsageError(f"--methods {method}: {e}") from None
    for method in (m for m in requested if ARMS[m].steps_of and ARMS[m].steps_of not in requested):
        matched = ARMS[method].steps_of
        missing = [s for s in seeds if not _finished(out, matched, s)]
        if missing:
            raise UsageError(
                f"{method} trains for as many steps as {matched} took, and {out} has no finished {matched} run "
                f"for seed(s) {missing}: add {matched} to --methods"
            )
    wanted = [(m, s) for s in seeds for m in requested]
    finished = {m for m in ARMS for s in seeds if _finished(out, m, s)}
    if not run_missing:
        if not finished:
            raise UsageError(
                f"--tables-only: {out} has no finished run for seed(s) {seeds}; name the seeds it ran (--seeds "
                "0,1,… with every seed, old and new), or drop --tables-only to train them"
            )
        requested = ()
    methods = list(requested)
    if resume:  # the comparison's other finished runs (e.g. trials run on fewer seeds) stay in its tables
        methods += [m for m in ARMS if m in finished and m not in requested]
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(_settings(base, study))
    started, earlier_minutes = time.time(), 0.0  # minutes of the (seed, method) runs read back, when resuming
    scores: dict[str, dict[str, list[dict]]] = {m: {"train_task": [], "transfer_task": []} for m in methods}
    runs: dict[str, list[dict]] = {m: [] for m in methods}  # per seed: steps, seconds per step, incentive means

    def tables(partial: bool) -> dict:
        """Write results.json and results.md over the seeds evaluated so far (`seeds_done`, marked partial, until
        every (seed, method) has run)."""
        ran = [m for m in ARMS if m in scores and scores[m]["train_task"]]  # table order, not run order
        results = {
            "train_task": task,
            "transfer_task": transfer_task,
            "seeds": seeds,
            "budget_min": study.budget_min,
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
        for method in sorted(methods, key=lambda m: bool(ARMS[m].steps_of)):
            run = out / method / f"seed{seed}"
            done = run / "done.json"
            if resume and done.is_file():
                record = read_done(run, ARMS[method].trained)
                earlier_minutes += record["minutes"]
                runs[method].append({"seed": seed, **_stats(record)})
                for key in ("train_task", "transfer_task"):
                    scores[method][key].append({"seed": seed, **read_eval(run / f"eval_{key}" / "eval.json")})
                if not quiet:
                    print(f"  {method:<29} seed {seed}: evaluated before, read back")
                continue
            if method not in requested:  # read back where it ran, not run here
                continue
            if run.exists():  # a method interrupted part-way starts again from scratch
                shutil.rmtree(run)
            method_started = time.time()
            if not ARMS[method].trained:
                ckpt, team_cfg = None, seed_cfg
            else:
                if not quiet:
                    print(f"[{(time.time() - started) / 60:.1f} min] seed {seed}: training {method}")
                matched = ARMS[method].steps_of
                steps = max(1, steps_trained(out / matched / f"seed{seed}")) if matched else 0
                ckpt, team_cfg = _train(method, seed_cfg, run, quiet, steps, study.solo_warmup_share)
            for key, name in (("train_task", task), ("transfer_task", transfer_task)):
                m = _evaluate(team_cfg, ckpt, name, run / f"eval_{key}")
                scores[method][key].append({"seed": seed, **m})
                if not quiet:
                    accs = " / ".join(f"{100 * a:.1f}" for a in m["acc_per_turn"])
                    print(f"  {method:<29} {name:<14} {accs}")
            minutes = round((time.time() - method_started) / 60, 1)
            record = {
                "method": method,
                "seed": seed,
                "budget_min": study.budget_min,
                "minutes": minutes,
                **run_stats(run),
            }
            done.write_text(json.dumps(record))
            runs[method].append({"seed": seed, **_stats(record)})
            tables(partial=True)  # after every run: a comparison of hours shows its numbers, and keeps them if cut off
    results = tables(partial=not all(_finished(out, m, s) for m, s in wanted))
    write_report(out)
    return results
