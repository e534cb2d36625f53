"""THE loop: MAPoRL co-training, read top to bottom like the paper's algorithm box.

    for each step:
        problems    <- task.sample(train split)                     # each discussed K = rollouts_per_problem times
        transcripts <- discussion.run(agents, problems)             # N agents x T turns
        scores      <- verifier(transcripts)                        # (B, N, T) in [0, 1]; invalid -> penalty
        rewards     <- step_rewards(scores, labels)                 # influence-aware + corrective/persuasive terms
        log π_old, V_old, log π_ref <- the policies, no gradients   # what the update compares against
        advantages, returns <- compute_advantages(rewards, ...)     # GAE on value heads (ppo) | group baselines
        update every trained agent                                  # clipped surrogate (+ value loss, KL)
        log; every k steps: evaluate, checkpoint

Departures from the paper's PPO, all settings: `grpo`/`rloo` replace the value head with a baseline from the same
(problem, agent, turn) over K independent discussions (default, cheapest on CPU); the KL to the reference is a loss
term for those (in the reward for PPO); LoRA dropout is 0 (peft mixed-adapter batches need eval mode).

`algo.name=sft` is the paper's naive-SFT baseline in the same loop: the untrained team discusses, the discussions
whose final answers are all right are kept, and every trained answer in them gets advantage 1.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from maporl import checkpoint, discussion, faults
from maporl.advantages import compute_advantages
from maporl.config import Config, save_config, to_dict
from maporl.errors import UsageError, WorkerLost
from maporl.evaluate import evaluate_team
from maporl.generation import Generator
from maporl.learner import Learner, Updaters
from maporl.policy import encode_episodes, policy_for, sampled_logprobs
from maporl.records import TrainBatch, answer_grid, write_transcripts
from maporl.rewards import incentive_counts, incentives, step_rewards
from maporl.study.incentives import incentive_advantage_stats
from maporl.tasks import get_task
from maporl.team import build_generator, build_team
from maporl.tracking import Tracker
from maporl.utils import progress, seed_everything
from maporl.verifiers import build_verifier
from maporl.verifiers.label import LabelVerifier


def step_problems(cfg: Config, task, step: int):
    """The step's training problems (a function of seed and step only: resume redoes the same ones), and the list
    with each problem repeated rollouts_per_problem times, consecutively."""
    problems = task.sample(cfg.train.problems_per_step, seed=cfg.seed * 1_000_003 + step, split="train")
    return problems, [p for p in problems for _ in range(cfg.algo.rollouts_per_problem)]


def _init_checkpoint(path: str) -> Path:
    """`train.init_from`: a maporl run directory (its latest checkpoint) or checkpoint directory."""
    if not Path(path).expanduser().exists():
        raise UsageError(
            f"train.init_from={path} does not exist; pass a maporl run directory or one of its checkpoints"
        )
    _, ckpt, _ = checkpoint.resolve(path)
    if ckpt is None:
        raise UsageError(f"train.init_from={path} is a model directory, not a maporl run; use model.path for a base")
    return ckpt


def train(
    cfg: Config, run_dir: Path, resume: bool = False, quiet: bool = False, final_eval: bool = True, team=None
) -> dict:
    """Co-train the team `cfg` describes (or `team`, one built in code, with adapters: backend=local only) and
    write the run to `run_dir`; returns the last checkpoint, the final evaluation, the steps done and the minutes."""
    seed_everything(cfg.seed)
    task, n, turns = get_task(cfg.task.name), cfg.discussion.num_agents, cfg.discussion.turns
    if team is not None and cfg.backend != "local":
        raise UsageError("a team built in code trains in this process only: use backend=local")
    team = team or build_team(cfg, with_adapters=True)
    policy = policy_for(cfg, team)
    if cfg.train.init_from:  # before the backends copy the weights out; a resumed checkpoint overrides it below
        checkpoint.load_weights(_init_checkpoint(cfg.train.init_from), policy)
    agents = list(cfg.train.agents) or list(range(n))
    # The generator samples from the trained policies; `discuss` runs a step's discussions and the updaters update
    # the agents (with backend=ray: sharded over rollout worker actors, and one learner actor per adapter).
    backends = _backends(cfg, team, task, policy, agents)
    generator, discuss, verifier, labeler = backends.generator, backends.discuss, backends.verifier, backends.labeler
    sft = cfg.algo.name == "sft"
    rollout_generator = build_generator(cfg, team.untrained()) if sft else generator
    if sft:  # naive SFT samples the untrained team (backend=local only, config.py checks)
        discuss = _discussing_here(cfg, task, rollout_generator)
    learner = Learner(policy, cfg.algo, agents, cfg.train.max_steps, cfg.seed, backends.updaters)
    recovery = backends.recovery(learner, team)
    slots = [(i, t) for i in agents for t in (cfg.train.turns or range(turns))]
    tokenizers = [team.tokenizer(i) for i in range(n)]
    start_step = 0
    if resume and (ckpt := checkpoint.latest(run_dir)) is not None:
        checkpoint.load_weights(ckpt, policy)
        start_step = checkpoint.load_trainer_state(ckpt, learner)
    # Weights version k + 1 after k updates, resumed or not: the transcripts of a resumed run are the uninterrupted's.
    generator.sync(team, start_step + 1)
    if resume:  # rows logged after the checkpoint (the crashed steps) are dropped: they are about to be redone
        _truncate_metrics(run_dir / "metrics.jsonl", start_step)
    if not (run_dir / "config.yaml").exists():  # library use: `maporl eval --checkpoint RUN_DIR` needs it
        save_config(run_dir, cfg)
    # Every metric row goes to metrics.jsonl, and to TensorBoard / W&B as train.report_to says.
    tracker = Tracker(run_dir, cfg.train.report_to, to_dict(cfg), cfg.run_name, start_step if resume else None)
    (run_dir / "transcripts").mkdir(exist_ok=True)
    started, done, timings = time.time(), start_step, {}

    def save(step: int) -> Path:
        extra = {"minutes": _minutes(started)}
        return checkpoint.save_checkpoint(run_dir, step, policy, learner, extra, cfg.train.keep_last)

    cuda = policy.device.type == "cuda"

    @contextmanager
    def timed(phase: str):
        if cuda:  # each phase's own peak: generation's KV cache and the update's activations are not held together
            torch.cuda.reset_peak_memory_stats(policy.device)
        t0 = time.time()
        yield
        timings[f"time/{phase}"] = time.time() - t0
        if cuda:
            timings[f"memory/{phase}_peak_gib"] = torch.cuda.max_memory_allocated(policy.device) / 2**30

    ahead: dict[int, Callable] = {}  # train.async_rollout: a step's discussions, started before the update before it

    def rollout_and_update(step: int):
        """One step up to and including the update and the weight sync (what a lost Ray actor makes us redo)."""
        with timed("generation"):
            problems, rollouts = step_problems(cfg, task, step)
            early = ahead.pop(step, None)
            transcripts = early() if early else discuss(rollouts, step)
            # Started before the last update, they were sampled with the weights before it: one version back.
            _check_fresh(transcripts, rollout_generator.weights_version - (early is not None))
            if cfg.train.async_rollout and step + 1 < cfg.train.max_steps:
                ahead[step + 1] = backends.start(step_problems(cfg, task, step + 1)[1], step + 1)
            rollout_generator.sleep()  # vLLM hands the GPU to the update; `sync` below wakes it
        with timed("scoring"):
            labels = labeler.score(transcripts)  # ground truth: 1.0 where the answer is correct
            raw = labels if verifier is labeler else verifier.score(transcripts)  # (B, N, T) in [0, 1]
            valid = answer_grid(transcripts, lambda pairs: [a.parsed is not None for _, a in pairs]).bool()
            rewards, correct = step_rewards(raw, labels, valid, cfg.reward)
        with timed("update"):
            # Naive SFT keeps the discussions whose final answers are all right; RL trains on every discussion.
            kept = labels[:, :, -1].bool().all(dim=1) if sft else labels.new_ones(len(transcripts)).bool()
            episodes = [(b, i, t) for b in kept.nonzero().flatten().tolist() for i, t in slots]
            batch = encode_episodes(tokenizers, transcripts, episodes)
            old_logp, old_values, ref_logp = learner.old_policy(batch, behaviour_logp=not cfg.train.async_rollout)
            if cfg.train.async_rollout:  # the behaviour policy: the sampler's, one update behind the learners'
                old_logp = sampled_logprobs(transcripts, episodes, batch)
            bonus = None  # the incentive part of the rewards: read only when it enters after the baseline
            if cfg.algo.incentive_placement == "advantage":
                bonus = incentives(correct, cfg.reward.alpha, cfg.reward.beta, cfg.reward.convention).to(rewards)
            advantages, returns = compute_advantages(cfg.algo, rewards, batch, old_logp, old_values, ref_logp, bonus)
            stats = learner.update(TrainBatch(batch, advantages, returns, old_logp, old_values, ref_logp), step + 1)
            generator.sync(team)
        return transcripts, labels, valid, rewards, correct, kept, stats

    def recover():
        """After a lost Ray actor: restart it, roll the step back; the redone step samples its own discussions."""
        ahead.clear()
        recovery.recover()

    with tracker, progress(cfg.train.max_steps - start_step, "train", quiet=quiet) as bar:
        for step in range(start_step, cfg.train.max_steps):
            faults.step = step + 1
            if cfg.train.minutes and time.time() - started > 60 * cfg.train.minutes:
                break
            recovery.begin()
            out = _redo_once(rollout_and_update, step, recover, save, run_dir)
            transcripts, labels, valid, rewards, correct, kept, stats = out

            step_time = sum(v for k, v in timings.items() if k.startswith("time/"))
            row = {"step": step + 1, **timings, "time/step": step_time, **stats}
            row["reward/mean"] = rewards.mean().item()
            for i in range(n):
                for t in range(turns):
                    row[f"reward/agent{i}/turn{t}"] = rewards[:, i, t].mean().item()
            row |= {f"train/acc/turn{t}": labels[:, :, t].mean().item() for t in range(turns)}
            # Drift into over-long or unparseable answers shows here long before accuracy collapses.
            answers = [a for tr in transcripts for turn in tr.answers for a in turn]
            row["train/truncated_rate"] = sum(a.truncated for a in answers) / len(answers)
            row["train/invalid_rate"] = 1.0 - valid.float().mean().item()
            row |= {f"incentive/{k}": v for k, v in incentive_counts(correct, cfg.reward.convention).items()}
            row |= incentive_advantage_stats(cfg.algo, cfg.reward, rewards, correct)  # what survives the baseline
            if sft:
                row["sft/kept_fraction"] = kept.float().mean().item()
            tracker.log(row)
            accs = "→".join(f"{row[f'train/acc/turn{t}']:.0%}" for t in range(turns))
            bar.advance(f"reward {row['reward/mean']:.2f} acc {accs} {row['time/step']:.1f}s/step")
            if cfg.train.transcripts_every and (step + 1) % cfg.train.transcripts_every == 0:
                write_transcripts(run_dir / "transcripts" / f"step_{step + 1:06d}.jsonl", transcripts[:32])
            if cfg.train.eval_every and (step + 1) % cfg.train.eval_every == 0:
                _evaluate(cfg, task, generator, step + 1, tracker)
            if cfg.train.checkpoint_every and (step + 1) % cfg.train.checkpoint_every == 0:
                save(step + 1)
            done = step + 1
            if learner.consecutive_nonfinite >= cfg.algo.max_nonfinite:
                print(f"maporl: stopping: {learner.consecutive_nonfinite} consecutive non-finite updates")
                break
        ckpt, metrics = save(done), None
        if final_eval:
            metrics, transcripts = _evaluate(cfg, task, generator, done, tracker)
            write_transcripts(run_dir / "eval_transcripts.jsonl", transcripts)
            (run_dir / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return {"checkpoint": ckpt, "eval": metrics, "steps": done, "minutes": _minutes(started)}


@dataclass(frozen=True)
class _Backends:
    generator: Generator
    discuss: Callable  # (problems, step) -> the step's transcripts
    verifier: object  # .score(transcripts) -> (B, N, T) scores
    labeler: LabelVerifier  # ground truth
    updaters: Updaters | None  # None: the learner's own, in this process
    recovery: Callable  # (learner, team) -> what restarts lost actors and rolls a step back (nothing in-process)
    start: Callable | None = None  # (problems, step) -> a call that waits for their transcripts (Ray only)


def _backends(cfg: Config, team, task, policy, agents: list[int]) -> _Backends:
    """In this process, or as Ray actors wrapping the same objects."""
    labeler = LabelVerifier(task)
    if cfg.backend == "ray":
        from maporl.distributed.learners import RayRecovery, ray_backends

        pool, verifier, updaters = ray_backends(cfg, policy, agents)

        def discuss_on_workers(problems, step: int):
            return pool.discuss(problems, cfg.task.name, cfg.discussion, cfg.seed, step)

        def recovery(learner, team):
            return RayRecovery(pool, verifier, learner, team)

        def start(problems, step: int):
            calls = pool.start(problems, cfg.task.name, cfg.discussion, cfg.seed, step)
            return lambda: pool.finish(calls)

        return _Backends(pool, discuss_on_workers, verifier, labeler, updaters, recovery, start)
    verifier = labeler if cfg.verifier.kind == "label" else build_verifier(cfg, task)
    generator = build_generator(cfg, team)
    return _Backends(generator, _discussing_here(cfg, task, generator), verifier, labeler, None, _NoRecovery)


class _NoRecovery:
    """In one process nothing is lost without losing the run: the step is never redone."""

    def __init__(self, learner, team):
        pass

    def begin(self) -> None:
        pass

    def recover(self) -> None:
        pass


def _redo_once(rollout_and_update: Callable, step: int, recover: Callable, save: Callable, run_dir: Path):
    """`rollout_and_update(step)`; when a Ray actor is lost in it, restart it, roll the step back and redo it once. A
    second loss stops the run with a checkpoint of the steps done, from which --resume continues exactly."""
    try:
        return rollout_and_update(step)
    except WorkerLost as lost:
        print(f"maporl: warning: {lost} in step {step + 1}; restarting it and redoing the step", file=sys.stderr)
        recover()
    try:
        return rollout_and_update(step)
    except WorkerLost as lost:
        recover()
        ckpt = save(step)
        raise UsageError(
            f"{lost} again in step {step + 1}; stopped with checkpoint {ckpt}: "
            f"continue with `maporl train --resume {run_dir}`"
        ) from None


def _discussing_here(cfg: Config, task, generator):
    def discuss(problems, step: int):
        return discussion.run(problems, task, generator, cfg.discussion, cfg.seed, step)

    return discuss


def _check_fresh(transcripts, version: int) -> None:
    """Every discussion of a step must come from the weights of the last update (a worker that missed a sync would
    train the learners on another policy's samples)."""
    stale = sorted({tr.meta["weights_version"] for tr in transcripts} - {version})
    if stale:
        raise RuntimeError(f"maporl: discussions sampled with weights version(s) {stale}, expected {version}")


def _minutes(started: float) -> float:
    return round((time.time() - started) / 60, 2)


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows of steps <= `step` (and drop a half-written last line), atomically."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", 0) <= step:
            keep.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{line}\n" for line in keep))
    tmp.replace(path)


def _evaluate(cfg: Config, task, generator, step: int, tracker: Tracker):
    metrics, transcripts = evaluate_team(cfg, task, generator, quiet=True)
    row = {"step": step} | {f"eval/acc/turn{t}": a for t, a in enumerate(metrics["acc_per_turn"])}
    row |= {f"eval/majority/turn{t}": a for t, a in enumerate(metrics["majority_per_turn"])}
    tracker.log(row)
    return metrics, transcripts
