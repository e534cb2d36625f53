"""The paper's "naive SFT" baseline: supervised fine-tuning on the untrained team's collaboration traces.

Each step the *base* team (adapters off) discusses a batch of training problems; discussions whose final answers are
all correct are kept, and every agent is fine-tuned on its own answers at every turn of them. The update is the
learner's on-policy step with advantage 1 on every episode: with one epoch and one minibatch the PPO ratio is 1 and
its gradient is exactly the negative log-likelihood gradient (token mean), so SFT reuses the same micro-batching,
per-agent clipping and non-finite guards as RL.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from maporl import checkpoint, discussion
from maporl.config import Config
from maporl.generation.hf import AgentSlot, HFGenerator
from maporl.learner import Learner
from maporl.policy import Policy, encode_episodes
from maporl.tasks import get_task
from maporl.team import build_team
from maporl.trainer import step_problems
from maporl.utils import progress, seed_everything


def train_sft(cfg: Config, run_dir: Path, quiet: bool = False) -> dict:
    """Same budget knobs as `trainer.train` (max_steps, minutes, problems_per_step x rollouts_per_problem)."""
    seed_everything(cfg.seed)
    task, n = get_task(cfg.task.name), cfg.discussion.num_agents
    team = build_team(cfg, with_adapters=True)
    policy = Policy(team, value_heads=False)
    g = cfg.generation
    base_slots = [AgentSlot(s.model_key, None) for s in team.slots]  # "__base__" rows: the untrained team
    base_team = HFGenerator(team.models, team.tokenizers, base_slots, g.temperature, g.max_new_tokens, g.batch_size)
    algo = dataclasses.replace(cfg.algo, name="grpo", epochs=1, minibatches=1, kl_coef=0.0)
    agents = list(cfg.train.agents) or list(range(n))
    learner = Learner(policy, algo, agents, cfg.train.max_steps, cfg.seed)
    tokenizers = [team.tokenizers[slot.model_key] for slot in team.slots]
    started, done = time.time(), 0
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "metrics.jsonl").open("a") as log, progress(cfg.train.max_steps, "sft", quiet=quiet) as bar:
        for step in range(cfg.train.max_steps):
            if cfg.train.minutes and time.time() - started > 60 * cfg.train.minutes:
                break
            t0 = time.time()
            _, rollouts = step_problems(cfg, task, step)
            transcripts = discussion.run(rollouts, task, base_team, cfg.discussion, cfg.seed, step)
            kept = [tr for tr in transcripts if all(task.is_correct(a.parsed, tr.problem) for a in tr.answers[-1])]
            row = {"step": step + 1, "sft/kept_fraction": len(kept) / len(transcripts)}
            if kept:
                turns = cfg.train.turns or range(cfg.discussion.turns)
                episodes = [(b, i, t) for b in range(len(kept)) for i in agents for t in turns]
                rewards = torch.ones(len(kept), n, cfg.discussion.turns)
                batch = encode_episodes(tokenizers, kept, episodes, rewards)
                row |= learner.update(batch, torch.ones(len(episodes)))
            row["time/step"] = time.time() - t0
            log.write(json.dumps(row) + "\n")
            log.flush()
            bar.advance(f"kept {row['sft/kept_fraction']:.0%} {row['time/step']:.1f}s/step")
            done = step + 1
    minutes = round((time.time() - started) / 60, 2)
    ckpt = checkpoint.save_checkpoint(run_dir, done, policy, learner, {"minutes": minutes, "method": "sft"})
    return {"checkpoint": ckpt, "steps": done, "minutes": minutes}
