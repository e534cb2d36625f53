"""THE loop: MAPoRL co-training, read top to bottom like the paper's algorithm box.

    for each step:
        problems    <- task.sample(train split)                     # each discussed K = rollouts_per_problem times
        transcripts <- discussion.run(agents, problems)             # N agents x T turns
        scores      <- verifier(transcripts)                        # (B, N, T) in [0, 1]; invalid -> penalty
        rewards     <- step_rewards(scores, labels)                 # influence reward + corrective/persuasive bonus
        log π_old, V_old, log π_ref <- the policies, no gradients   # what the update compares against
        advantages, returns <- compute_advantages(rewards, ...)     # GAE on value heads (ppo) | group baselines;
                                                                    # it alone places the bonus
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
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from maporl import checkpoint, faults
from maporl.advantages import compute_advantages
from maporl.config import Config, save_config, to_dict
from maporl.distributed.backend import backends_for, discussing_here, redo_once
from maporl.episodes import encode_episodes, sampled_logprobs
from maporl.errors import UsageError
from maporl.evaluation import evaluate_team
from maporl.generation.registry import build_generator
from maporl.learner import Learner
from maporl.policy import policy_for
from maporl.records import TrainBatch, Transcript, answer_grid, write_transcripts
from maporl.rewards import StepRewards, incentive_counts, step_rewards
from maporl.study.incentives import incentive_advantage_stats
from maporl.tasks import get_task
from maporl.team import build_team
from maporl.tracking import Tracker
from maporl.utils import progress, seed_everything


@dataclass(frozen=True)
class StepOutputs:
    """What one step's rollout and update leave for its metrics row and transcripts."""

    transcripts: list[Transcript]  # B discussions, each problem's K rollouts consecutive
    labels: torch.Tensor  # (B, N, T) ground-truth correctness
    valid: torch.Tensor  # (B, N, T) bool: the answer had a parseable final answer
    rewards: StepRewards
    kept: torch.Tensor  # (B,) bool: the discussions trained on (naive SFT keeps the all-right ones)
    stats: dict[str, float]  # the learner's


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
    run_dir = Path(run_dir)
    task, n, turns = get_task(cfg.task.name), cfg.discussion.num_agents, cfg.discussion.turns
    if team is not None and cfg.backend != "local":
        raise UsageError("a team built in code trains in this process only: use backend=local")
    team = team or build_team(cfg, with_adapters=True)
    policy = policy_for(cfg, team)
    if cfg.train.init_from:  # before the backends copy the weights out; a resumed checkpoint overrides it below
        checkpoint.load_policy(_init_checkpoint(cfg.train.init_from), policy)
    agents = list(cfg.train.agents) or list(range(n))
    # The generator samples from the trained policies; `discuss` runs a step's discussions and the updaters update
    # the agents (with backend=ray: sharded over rollout worker actors, and one learner actor per adapter).
    backends = backends_for(cfg, team, task, policy, agents)
    generator, discuss, verifier, labeler = backends.generator, backends.discuss, backends.verifier, backends.labeler
    sft = cfg.algo.name == "sft"
    rollout_generator = build_generator(cfg, team.untrained()) if sft else generator
    if sft:  # naive SFT samples the untrained team (backend=local only, config.py checks)
        discuss = discussing_here(cfg, task, rollout_generator)
    learner = Learner(policy, cfg.algo, agents, cfg.train.max_steps, cfg.seed, backends.updaters)
    recovery = backends.recovery(learner, team)
    slots = [(i, t) for i in agents for t in (cfg.train.turns or range(turns))]
    tokenizers = [team.tokenizer(i) for i in range(n)]
    start_step = 0
    if resume and (ckpt := checkpoint.latest(run_dir)) is not None:
        checkpoint.load_policy(ckpt, policy)
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

    timed = _phase_timer(policy.device, timings)
    ahead: dict[int, Callable] = {}  # train.async_rollout: a step's discussions, started before the update before it

    def rollout_and_update(step: int) -> StepOutputs:
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
            rewards = step_rewards(raw, labels, valid, cfg.reward)
        with timed("update"):
            # Naive SFT keeps the discussions whose final answers are all right; RL trains on every discussion.
            kept = labels[:, :, -1].bool().all(dim=1) if sft else labels.new_ones(len(transcripts)).bool()
            episodes = [(b, i, t) for b in kept.nonzero().flatten().tolist() for i, t in slots]
            batch = encode_episodes(tokenizers, transcripts, episodes)
            old_logp, old_values, ref_logp = learner.old_policy(batch, behaviour_logp=not cfg.train.async_rollout)
            if cfg.train.async_rollout:  # the behaviour policy: the sampler's, one update behind the learners'
                old_logp = sampled_logprobs(transcripts, episodes, batch)
            advantages, returns = compute_advantages(
                cfg.algo, rewards.influence, batch, old_logp, old_values, ref_logp, rewards.bonus
            )
            stats = learner.update(TrainBatch(batch, advantages, returns, old_logp, old_values, ref_logp), step + 1)
            generator.sync(team)
        return StepOutputs(transcripts, labels, valid, rewards, kept, stats)

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
            out = redo_once(rollout_and_update, step, recover, save, run_dir)
            row = _metrics_row(cfg, step + 1, out, timings)
            tracker.log(row)
            accs = "→".join(f"{row[f'train/acc/turn{t}']:.0%}" for t in range(turns))
            bar.advance(f"reward {row['reward/mean']:.2f} acc {accs} {row['time/step']:.1f}s/step")
            if cfg.train.transcripts_every and (step + 1) % cfg.train.transcripts_every == 0:
                write_transcripts(run_dir / "transcripts" / f"step_{step + 1:06d}.jsonl", out.transcripts[:32])
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


def _metrics_row(cfg: Config, step: int, out: StepOutputs, timings: dict) -> dict:
    """The step's row of metrics.jsonl (docs/metrics.md)."""
    n, turns = cfg.discussion.num_agents, cfg.discussion.turns
    total = out.rewards.total
    step_time = sum(v for k, v in timings.items() if k.startswith("time/"))
    row = {"step": step, **timings, "time/step": step_time, **out.stats}
    row["reward/mean"] = total.mean().item()
    for i in range(n):
        for t in range(turns):
            row[f"reward/agent{i}/turn{t}"] = total[:, i, t].mean().item()
    row |= {f"train/acc/turn{t}": out.labels[:, :, t].mean().item() for t in range(turns)}
    # Drift into over-long or unparseable answers shows here long before accuracy collapses.
    answers = [a for tr in out.transcripts for turn in tr.answers for a in turn]
    row["train/truncated_rate"] = sum(a.truncated for a in answers) / len(answers)
    row["train/invalid_rate"] = 1.0 - out.valid.float().mean().item()
    row |= {f"incentive/{k}": v for k, v in incentive_counts(out.rewards.correct, cfg.reward.convention).items()}
    row |= incentive_advantage_stats(cfg.algo, out.rewards, cfg.reward.convention)  # what survives the baseline
    if cfg.algo.name == "sft":
        row["sft/kept_fraction"] = out.kept.float().mean().item()
    return row


def _phase_timer(device: torch.device, timings: dict):
    """`with timed(phase):` records the phase's seconds (and, on CUDA, its own peak memory) in `timings`."""
    cuda = device.type == "cuda"

    @contextmanager
    def timed(phase: str):
        if cuda:  # each phase's own peak: generation's KV cache and the update's activations are not held together
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.time()
        yield
        timings[f"time/{phase}"] = time.time() - t0
        if cuda:
            timings[f"memory/{phase}_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30

    return timed


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
