"""Memory of a co-training update on a real model, measured side by side in one run (each case in a fresh process).

    python bench/memory.py [--model DIR] [--skip-rss] [--device cuda]
    python bench/memory.py --smoke   # seconds: the embedded base, tiny sizes, every case in this process

Model: SmolLM2-135M-Instruct imported with `maporl model import-gguf` (or `--model DIR`, any local HF chat model).
1. Peak memory of one co-training update (the trainer's update phase: the old-policy and reference passes, the
   advantages and one PPO optimizer step) of 3 agents x 2 turns, 24 answers of 128 new tokens, as the increase of
   the process's resident memory over what it held just before: plain, then each memory option alone
   (`model.activation_checkpointing`, `model.autocast` (bf16), `algo.micro_batch_tokens`), then all of them.
   Target: all options together <= 0.6 x plain. With `--device cuda`: the peak of torch's CUDA allocator over what
   it held before the update instead, with bf16 weights.
2. Peak RSS of building the team and one co-training step (discussion + update), 4 agents on one shared base vs
   1 agent, the same answers per step (bench/throughput.py's measurement, on this model, with the memory options a
   real model is run with: all of the above). Target <= 1.15.
Last line: one JSON object: update_peak_mib_<option>, update_seconds_<option> and update_peak_ratio_<option>_vs_plain
for each option (plain, activation_checkpointing, autocast_bf16, micro_batch_tokens, all), update_tokens,
rss_mib_1_agent_smollm2, rss_mib_4_agents_smollm2, rss_ratio_4v1_smollm2 (not with --skip-rss), model, minutes.
--smoke checks that every case still runs (tests/test_bench_smoke.py), not its figures: the embedded base stands in
for SmolLM2, the update has 6 answers (1 problem) of 8 tokens, the step short answers, and no case runs in a fresh
process.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ANSWER_TOKENS = 128
SMOKE_SIZES = {"answer_tokens": 8, "problems": 1}  # 6 answers of 8 tokens
SMOKE = False  # --smoke: every case in this process (a fresh process costs seconds of imports)
OPTIONS = {
    "plain": [],
    "activation_checkpointing": ["model.activation_checkpointing=true"],
    "autocast_bf16": ["model.autocast=true"],
    "micro_batch_tokens": ["algo.micro_batch_tokens=1024"],
}
OPTIONS["all"] = [o for opts in OPTIONS.values() for o in opts]


def rss_mib() -> float:
    """The process's resident memory now."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


class PeakSampler:
    """The highest resident memory seen while the block runs (sampled every millisecond from a thread; torch's
    kernels release the GIL)."""

    def __enter__(self):
        self.peak, self.running = rss_mib(), True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while self.running:
            self.peak = max(self.peak, rss_mib())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_mib())


def child(*args: str) -> dict:
    """Run this script in a fresh process for one measurement; its last stdout line is JSON."""
    if SMOKE:
        return json.loads(json.dumps(case(*args)))
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_update(
    model: str, option: str, device: str = "cpu", answer_tokens: int = ANSWER_TOKENS, problems: int = 4
) -> dict:
    """One co-training update of 24 answers (4 problems x 3 agents x 2 turns) of `answer_tokens` sampled tokens."""
    import random

    import torch

    from maporl.advantages import compute_advantages
    from maporl.config import load_config
    from maporl.episodes import encode_episodes
    from maporl.learner import Learner
    from maporl.policy import Policy
    from maporl.prompts import discussion_prompt, first_turn_prompt
    from maporl.records import Answer, TrainBatch, Transcript
    from maporl.tasks import get_task
    from maporl.team import build_team

    torch.manual_seed(0)
    settings = [f"model.name_or_path={model}", "discussion.num_agents=3", "discussion.turns=2", "task.name=arith_word"]
    settings += ["algo.name=ppo", "algo.kl_coef=0.002", "algo.micro_batch_size=32", *OPTIONS[option]]
    if device != "cpu":
        settings += [f"model.device={device}", "model.dtype=bfloat16"]
    cfg = load_config(None, settings)
    task = get_task(cfg.task.name)
    team = build_team(cfg, with_adapters=True)
    m = cfg.model
    policy = Policy(team, True, autocast=m.autocast, activation_checkpointing=m.activation_checkpointing)
    tokenizer, rng = team.tokenizer(0), random.Random(0)
    eos = tokenizer.eos_token_id
    # Sampled answers stand in for a rollout: the update's memory depends on the lengths, not on the words.
    words = [t for t in range(len(tokenizer)) if t not in tokenizer.all_special_ids]
    transcripts = []
    for problem in task.sample(problems, 0, "train"):
        question, turns = task.render_question(problem), []
        for t in range(2):
            turn = []
            for i in range(3):
                prompt = (
                    first_turn_prompt(question)
                    if t == 0
                    else discussion_prompt(question, "7", [(j, "9") for j in range(3) if j != i])
                )
                ids = (*rng.choices(words, k=answer_tokens - 1), eos)
                turn.append(Answer(i, t, prompt, "", None, False, ids, (0.0,) * answer_tokens))
            turns.append(tuple(turn))
        transcripts.append(Transcript(problem, tuple(turns)))
    episodes = [(b, i, t) for b in range(problems) for i in range(3) for t in range(2)]
    batch = encode_episodes(tokenizer, transcripts, episodes)
    learner = Learner(policy, cfg.algo, [0, 1, 2], total_steps=1, seed=0)
    rewards = torch.rand(problems, 3, 2)
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what earlier phases freed goes back to the system first
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() / 2**20 if cuda else rss_mib()
    start = time.perf_counter()
    with PeakSampler() as sampler:
        old_logp, old_values, ref_logp = learner.old_policy(batch)
        advantages, returns = compute_advantages(cfg.algo, rewards, batch, old_logp, old_values, ref_logp)
        learner.update(TrainBatch(batch, advantages, returns, old_logp, old_values, ref_logp))
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else sampler.peak
    tokens = int(batch.attention_mask.sum())
    return {"peak_mib": peak - before, "seconds": time.perf_counter() - start, "tokens": tokens}


def measure_rss(model: str, agents: int) -> dict:
    from throughput import measure_rss as throughput_rss

    return throughput_rss(agents, "per_agent", model, *OPTIONS["all"])


def case(kind: str, *rest: str) -> dict:
    """One measurement, as `--_update MODEL OPTION DEVICE TOKENS PROBLEMS` or `--_rss MODEL AGENTS` name it."""
    if kind == "--_update":
        model, option, device, tokens, problems = rest
        return measure_update(model, option, device, int(tokens), int(problems))
    model, agents = rest
    return measure_rss(model, int(agents))


def main() -> None:
    global SMOKE
    if len(sys.argv) > 1 and sys.argv[1].startswith("--_"):
        print(json.dumps(case(*sys.argv[1:])))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a local HF chat model directory (default: SmolLM2-135M-Instruct from its GGUF)")
    ap.add_argument("--skip-rss", action="store_true", help="only the update's peak memory")
    ap.add_argument("--device", default="cpu", help="cpu (resident memory) or cuda (the CUDA allocator's peak)")
    ap.add_argument("--smoke", action="store_true", help="seconds, tiny sizes: that every case runs (CI)")
    args = ap.parse_args()
    SMOKE = args.smoke
    sizes = SMOKE_SIZES if args.smoke else {"answer_tokens": ANSWER_TOKENS, "problems": 4}
    if args.smoke:  # the co-training step of the RSS cases: short answers, two turns, one rollout per problem
        os.environ["MAPORL_BENCH_OVERRIDES"] = (
            "generation.max_new_tokens=8 discussion.turns=2 train.problems_per_step=1 algo.rollouts_per_problem=1 "
            "eval.num_problems=1"
        )
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or ("embedded" if args.smoke else None)
        if model is None:
            from maporl.models.gguf import import_gguf

            model = str(Path(tmp) / "smollm2")
            import_gguf(None, Path(model))
        sized = [str(sizes["answer_tokens"]), str(sizes["problems"])]
        updates = {name: child("--_update", model, name, args.device, *sized) for name in OPTIONS}
        rss = None if args.skip_rss else {a: child("--_rss", model, str(a))["rss_mib"] for a in (1, 4)}
    plain = updates["plain"]["peak_mib"]
    result = {f"update_peak_mib_{name}": round(u["peak_mib"]) for name, u in updates.items()}
    result |= {f"update_seconds_{name}": round(u["seconds"], 1) for name, u in updates.items()}
    result |= {f"update_peak_ratio_{name}_vs_plain": round(u["peak_mib"] / plain, 3) for name, u in updates.items()}
    result["update_tokens"] = updates["plain"]["tokens"]
    if rss:
        result |= {"rss_mib_1_agent_smollm2": round(rss[1]), "rss_mib_4_agents_smollm2": round(rss[4])}
        result["rss_ratio_4v1_smollm2"] = round(rss[4] / rss[1], 3)
    result["model"] = model if args.model or args.smoke else "SmolLM2-135M-Instruct"
    result["minutes"] = round((time.time() - started) / 60, 1)
    for name in OPTIONS:
        u = updates[name]
        print(
            f"update peak, {name:<26} {u['peak_mib']:>7.0f} MiB  {u['seconds']:>6.1f} s  x{u['peak_mib'] / plain:.2f}"
        )
    if rss:
        print(f"peak RSS of a step, 4 agents / 1 agent       {rss[4]:.0f} / {rss[1]:.0f} MiB = {rss[4] / rss[1]:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
