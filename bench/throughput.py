"""Throughput and memory of maporl, measured side by side in one run on this machine (each case in a fresh process).

    python bench/throughput.py [--requests 192] [--steps 8] [--skip-trl] [--set generation.merge_adapters=never]
    python bench/throughput.py --smoke   # seconds: tiny sizes, one round, every case in this process

1. rollout tokens/s, 3 agents on a shared base (mixed-adapter batches) / 1 agent, same total batch (target >= 0.95);
   and decoded tokens/s of a 3-agent mixed-adapter batch / the base model's own `generate` with no adapters, same
   prompts, batch and length (`decode_ratio_vs_base`, target >= 0.9: the limit for an adapter decoder);
2. peak RSS of one co-training step with the same answers per step: 4 agents on a shared base / 1 agent (target
   <= 1.25), and 4 separate model copies / 1 agent for contrast (`--model DIR` for a bigger base than the tiny one);
3. single-agent GRPO samples/s: maporl / TRL GRPOTrainer, same tiny model, batch and generation length
   (target >= 1.5);
4. time split per phase (generation / scoring / update) of the default config (`maporl train --max-steps 3`), and
   update_ratio_vs_generation (its update time / generation time).
Last line: one JSON object: rollout_tokens_per_s_1_agent, rollout_tokens_per_s_3_agents, rollout_ratio_3v1,
decode_tokens_per_s_3_agents, decode_tokens_per_s_base, decode_ratio_vs_base, rss_mib_1_agent,
rss_mib_4_agents_shared_base, rss_mib_4_copies, rss_ratio_4v1, rss_ratio_4copies_v1, grpo_samples_per_s_maporl,
grpo_samples_per_s_trl, grpo_samples_per_s_ratio_vs_trl (both null with --skip-trl or without TRL, which
`pip install 'maporl[bench]'` brings), phase_seconds_default_config, update_ratio_vs_generation, minutes, overrides.
--smoke checks that every case still runs (tests/test_bench_smoke.py), not its figures: 8 requests of 8 new tokens,
one round, GRPO batches of 8 for 2 steps, steps of 2 turns and few rollouts, and no case in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMOKE = False  # --smoke: every case in this process (a fresh process costs seconds of imports)
PROMPTS = [f"What is {a}+{b}-{c}?" for a, b, c in zip(range(7, 50), range(13, 56), range(3, 46), strict=True)]


def child(*args: str) -> dict:
    """Run this script in a fresh process for one measurement; its last stdout line is JSON."""
    if SMOKE:
        return json.loads(json.dumps(case(*args)))
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def tiny_cfg(*overrides: str):
    from maporl.config import load_config

    extra = os.environ.get("MAPORL_BENCH_OVERRIDES", "").split()  # --set: for every maporl case, e.g. A/B runs
    return load_config(None, ["generation.max_new_tokens=64", "generation.temperature=1.0", *overrides, *extra])


def measure_rollout(agents: int, requests: int) -> dict:
    from maporl.generation import GenRequest
    from maporl.generation.registry import hf_generator
    from maporl.team import build_team

    cfg = tiny_cfg(f"discussion.num_agents={agents}", f"generation.batch_size={requests}")
    team = build_team(cfg, with_adapters=True)
    gen = hf_generator(cfg, team)
    reqs = [
        GenRequest(({"role": "user", "content": PROMPTS[k % len(PROMPTS)]},), agent=k % agents, seed=k)
        for k in range(requests)
    ]
    gen.generate(reqs[:8])  # warm-up
    gen.tokens_generated = 0
    start = time.perf_counter()
    for _ in range(3):
        gen.generate(reqs)
    return {"tokens_per_s": gen.tokens_generated / (time.perf_counter() - start)}


def measure_decode(kind: str, agents: int, requests: int, new_tokens: int) -> dict:
    """Decoded tokens/s at a fixed length (no row stops early, so both sides decode the same rows x steps):
    maporl's generator over a mixed-adapter batch of `agents` agents, or the base model's own `generate` with
    no adapters ("base": plain transformers, greedy), same prompts and batch."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    import maporl.generation.hf as hf
    from maporl.generation import GenRequest, encode_prompt
    from maporl.generation.registry import hf_generator
    from maporl.models import EMBEDDED_DIR
    from maporl.team import build_team

    cfg = tiny_cfg(f"discussion.num_agents={agents}", f"generation.batch_size={requests}",
                   f"generation.max_new_tokens={new_tokens}")  # fmt: skip
    reqs = [
        GenRequest(({"role": "user", "content": PROMPTS[k % len(PROMPTS)]},), agent=k % agents, seed=k)
        for k in range(requests)
    ]
    if kind == "base":
        model = AutoModelForCausalLM.from_pretrained(EMBEDDED_DIR).eval()
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(EMBEDDED_DIR)
        prompts = [encode_prompt(tok, r.messages) for r in reqs]
        width = max(map(len, prompts))
        ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        config = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                  eos_token_id=None, pad_token_id=tok.pad_token_id)  # fmt: skip

        def run() -> None:
            with torch.no_grad():
                model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    else:
        team = build_team(cfg, with_adapters=True)
        with torch.no_grad():  # trained-looking adapters: non-zero B, so every LoRA layer really applies
            for m in team.models.values():
                for name, p in m.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, 0.02)
        gen = hf_generator(cfg, team)

        def run() -> None:
            gen.generate(reqs)

    real_end_of_turn_ids = hf.end_of_turn_ids
    if kind != "base":
        hf.end_of_turn_ids = lambda model, tokenizer: [10**9]  # no row ends early
    try:
        run()  # warm-up
        start = time.perf_counter()
        for _ in range(3):
            run()
        seconds = time.perf_counter() - start
    finally:
        hf.end_of_turn_ids = real_end_of_turn_ids  # (--smoke runs the other cases in this process)
    return {"tokens_per_s": 3 * requests * new_tokens / seconds}


def measure_rss(agents: int, layout: str, model: str = "embedded", *overrides: str) -> dict:
    """Peak RSS (MiB) of building the team and one co-training step (discussion + update), with the same number of
    answers per step whatever the number of agents (16 problems x 1 agent = 4 problems x 4 agents): the ratio is
    then what the extra agents cost, not a bigger batch's activations."""
    from maporl import trainer

    cfg = tiny_cfg(
        f"discussion.num_agents={agents}",
        f"discussion.adapters={layout}",
        "train.max_steps=1",
        f"train.problems_per_step={16 // agents}",
        f"model.name_or_path={model}",
        "eval.num_problems=4",
        "train.checkpoint_every=0",
        *overrides,
    )
    with tempfile.TemporaryDirectory() as d:
        trainer.train(cfg, Path(d), quiet=True)
    return {"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_maporl_grpo(batch: int, generations: int, steps: int) -> dict:
    from maporl import trainer

    cfg = tiny_cfg(
        "discussion.num_agents=1",
        "discussion.turns=1",
        f"train.problems_per_step={batch // generations}",
        f"algo.rollouts_per_problem={generations}",
        "algo.group_by=problem",
        f"train.max_steps={steps}",
        "train.checkpoint_every=0",
        "eval.num_problems=1",
    )
    with tempfile.TemporaryDirectory() as d:
        trainer.train(cfg, Path(d), quiet=True)
        rows = [json.loads(line) for line in (Path(d) / "metrics.jsonl").read_text().splitlines()]
    times = [r["time/step"] for r in rows if "time/step" in r][1:]  # the first step warms up
    return {"samples_per_s": batch / statistics.mean(times)}


def measure_trl_grpo(batch: int, generations: int, steps: int) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from maporl.models import EMBEDDED_DIR
    from maporl.tasks.base import extract_number_answer

    answers = {}
    rows = []
    for k in range(batch * (steps + 1)):
        q = PROMPTS[k % len(PROMPTS)]
        a, rest = q[8:-1].split("+")
        b, c = rest.split("-")
        answers[q] = str(int(a) + int(b) - int(c))
        rows.append({"prompt": [{"role": "user", "content": q}], "question": q})

    def reward(completions, question, **kwargs):
        return [
            float(extract_number_answer(c[0]["content"]) == answers[q])
            for c, q in zip(completions, question, strict=True)
        ]

    with tempfile.TemporaryDirectory() as d:
        args = GRPOConfig(
            output_dir=d,
            per_device_train_batch_size=batch,
            num_generations=generations,
            max_completion_length=64,
            max_steps=steps + 1,
            learning_rate=1e-3,
            temperature=1.0,
            beta=0.0,
            logging_steps=1,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            bf16=False,
            disable_tqdm=True,
        )
        from peft import LoraConfig

        peft = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
        trainer = GRPOTrainer(
            model=str(EMBEDDED_DIR), reward_funcs=reward, args=args, train_dataset=Dataset.from_list(rows),
            peft_config=peft,
        )  # fmt: skip
        step_times: list[float] = []
        from transformers import TrainerCallback

        class Clock(TrainerCallback):
            def on_step_begin(self, *a, **k):
                self.t0 = time.perf_counter()

            def on_step_end(self, *a, **k):
                step_times.append(time.perf_counter() - self.t0)

        trainer.add_callback(Clock())
        trainer.train()
    return {"samples_per_s": batch / statistics.mean(step_times[1:]), "steps": len(step_times)}


def measure_phases(steps: int = 3, *overrides: str) -> dict:
    from maporl import trainer

    cfg = tiny_cfg(f"train.max_steps={steps}", "train.checkpoint_every=0", "eval.num_problems=8", *overrides)
    with tempfile.TemporaryDirectory() as d:
        trainer.train(cfg, Path(d), quiet=True)
        rows = [json.loads(line) for line in (Path(d) / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "time/step" in r]
    return {k: statistics.mean(r[f"time/{k}"] for r in steps) for k in ("generation", "scoring", "update", "step")}


def case(kind: str, *rest: str) -> dict:
    """One measurement, as `--_rollout AGENTS REQUESTS` and the others name it."""
    fn = {"--_rollout": measure_rollout, "--_rss": measure_rss, "--_maporl": measure_maporl_grpo}
    fn |= {"--_decode": measure_decode}
    fn |= {"--_trl": measure_trl_grpo, "--_phases": measure_phases}
    return fn[kind](*[int(x) if x.isdigit() else x for x in rest])


def trl_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("trl") is not None


def main() -> None:
    global SMOKE
    if len(sys.argv) > 1 and sys.argv[1].startswith("--_"):
        print(json.dumps(case(*sys.argv[1:])))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=192)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--rss-model", default="embedded", help="model directory for the memory ratios")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every maporl case")
    ap.add_argument("--smoke", action="store_true", help="seconds, tiny sizes: that every case runs (CI)")
    args = ap.parse_args()
    SMOKE = args.smoke
    rounds, new_tokens, batch, gens, phase_steps, rss_sizes = 3, 48, 32, 4, ["3"], []
    if args.smoke:
        args.requests, args.steps, rounds, new_tokens, batch, gens = 8, 2, 1, 8, 8, 2
        args.set = ["generation.max_new_tokens=8", "eval.num_problems=2", *args.set]
        phase_steps = ["2", "train.problems_per_step=2", "algo.rollouts_per_problem=2", "discussion.turns=2"]
        rss_sizes = ["train.problems_per_step=1", "algo.rollouts_per_problem=1", "discussion.turns=2"]
    if not args.skip_trl and not trl_installed():
        print("TRL is not installed (pip install 'maporl[bench]'): no GRPO comparison with it")
        args.skip_trl = True
    os.environ["MAPORL_BENCH_OVERRIDES"] = " ".join(args.set)
    started = time.time()
    # This machine's speed drifts by up to 40% between minutes, so paired cases alternate, 3 rounds each, and each
    # ratio is taken between medians.
    r1, r3 = (
        {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs)}
        for runs in zip(*[(child("--_rollout", "1", str(args.requests)), child("--_rollout", "3", str(args.requests)))
                          for _ in range(rounds)], strict=True)
    )  # fmt: skip
    paired = [{kind: child("--_decode", kind, "3", str(args.requests), str(new_tokens)) for kind in ("maporl", "base")}
              for _ in range(rounds)]  # fmt: skip
    decode = {kind: {"tokens_per_s": statistics.median(r[kind]["tokens_per_s"] for r in paired)} for kind in paired[0]}
    m1, m4 = (child("--_rss", str(n), "per_agent", args.rss_model, *rss_sizes) for n in (1, 4))
    m4copies = child("--_rss", "4", "separate", args.rss_model, *rss_sizes)
    ours = child("--_maporl", str(batch), str(gens), str(args.steps))
    trl = None if args.skip_trl else child("--_trl", str(batch), str(gens), str(args.steps))
    phases = child("--_phases", *phase_steps)
    result = {
        "rollout_tokens_per_s_1_agent": round(r1["tokens_per_s"], 1),
        "rollout_tokens_per_s_3_agents": round(r3["tokens_per_s"], 1),
        "rollout_ratio_3v1": round(r3["tokens_per_s"] / r1["tokens_per_s"], 3),
        "decode_tokens_per_s_3_agents": round(decode["maporl"]["tokens_per_s"], 1),
        "decode_tokens_per_s_base": round(decode["base"]["tokens_per_s"], 1),
        "decode_ratio_vs_base": round(decode["maporl"]["tokens_per_s"] / decode["base"]["tokens_per_s"], 3),
        "rss_mib_1_agent": round(m1["rss_mib"]),
        "rss_mib_4_agents_shared_base": round(m4["rss_mib"]),
        "rss_mib_4_copies": round(m4copies["rss_mib"]),
        "rss_ratio_4v1": round(m4["rss_mib"] / m1["rss_mib"], 3),
        "rss_ratio_4copies_v1": round(m4copies["rss_mib"] / m1["rss_mib"], 3),
        "grpo_samples_per_s_maporl": round(ours["samples_per_s"], 2),
        "grpo_samples_per_s_trl": round(trl["samples_per_s"], 2) if trl else None,
        "grpo_samples_per_s_ratio_vs_trl": round(ours["samples_per_s"] / trl["samples_per_s"], 3) if trl else None,
        "phase_seconds_default_config": {k: round(v, 3) for k, v in phases.items()},
        "update_ratio_vs_generation": round(phases["update"] / phases["generation"], 3),
        "minutes": round((time.time() - started) / 60, 1),
        "overrides": args.set,
    }
    rows = [
        ("rollout tokens/s, 3 agents / 1 agent (>= 0.95)", result["rollout_ratio_3v1"]),
        ("decode tokens/s, 3-agent mixed batch / base alone (>= 0.9)", result["decode_ratio_vs_base"]),
        ("peak RSS, 4 agents shared base / 1 agent (<= 1.25)", result["rss_ratio_4v1"]),
        ("peak RSS, 4 model copies / 1 agent", result["rss_ratio_4copies_v1"]),
        ("GRPO samples/s, maporl / TRL (>= 1.5)", result["grpo_samples_per_s_ratio_vs_trl"]),
    ]
    for name, value in rows:
        print(f"{name:<56} {value}")
    print("phase seconds (default config):", result["phase_seconds_default_config"])
    print("update / generation time (default config):", result["update_ratio_vs_generation"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
