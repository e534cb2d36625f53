"""backend=ray on this machine, measured side by side in one run (each measurement in a fresh process).

    python bench/ray_scaling.py [--rounds 2] [--steps 8]
    python bench/ray_scaling.py --smoke   # tiny sizes, one round of 2 steps, every measurement in this process

1. rollout_ratio_2w_vs_1w: generated tokens/s of one step's discussions (the default config: 8 problems x 4
   rollouts, 3 agents x 3 turns = 288 answers) on 2 rollout worker actors / on 1, the same problems and seeds, one
   torch thread per actor; the two pools take turns (target >= 1.6).
2. steps_per_min_ratio_ray_vs_local: co-training steps per minute of backend=ray (2 rollout workers, one learner
   actor per agent: 3, one torch thread each) / the in-process default (torch's own thread count), the default config,
   each run's median step time after its first step; the two take turns (target >= 1.1).
   steps_per_min_ratio_async_vs_sync: the same Ray run with train.async_rollout=true / without.
3. ray_startup_s: from `ray.init` to every actor (2 workers, 3 learners, verifier) answering; local_startup_s: the
   in-process team and generator, for contrast.
Last line: one JSON object: rollout_ratio_2w_vs_1w, steps_per_min_ratio_ray_vs_local,
steps_per_min_ratio_async_vs_sync, ray_startup_s, local_startup_s, rollout_s (per round, by worker count) and step_s
(each round's median, by backend: local, ray, ray-async).
--smoke checks that every measurement still runs (tests/test_bench_smoke.py), not its figures: 2 agents sharing one
adapter (one learner actor), 2 problems x 2 rollouts of 8 tokens, 1 rollout worker in the training runs. Needs Ray
(`pip install 'maporl[ray]'`); without it the script says so in one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = ["backend=ray", "ray.rollout_workers=2", "ray.cpus_per_actor=0.4"]  # 2 workers + 3 learners fit 2 CPUs
SMOKE_SIZES = [
    "discussion.num_agents=2",
    "discussion.turns=2",
    "discussion.adapters=shared",
    "train.problems_per_step=2",
    "algo.rollouts_per_problem=2",
    "generation.max_new_tokens=8",
    "eval.num_problems=2",
]
SMOKE = False  # --smoke: SMOKE_SIZES in every configuration, every measurement in this process


def sizes(ray: bool = False) -> list[str]:
    """What --smoke adds to a configuration (a Ray one also gets one rollout worker)."""
    if not SMOKE:
        return []
    return [*SMOKE_SIZES, "ray.rollout_workers=1"] if ray else SMOKE_SIZES


def child(*args: str) -> dict:
    """Run this script in a fresh process for one measurement; its last stdout line is JSON."""
    if SMOKE:
        return json.loads(json.dumps(measure(*args)))
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_rollouts(rounds: int) -> dict:
    """Both pools in one Ray session (1 + 2 workers at 0.4 CPU each), alternating; seconds per step's rollout."""
    from maporl.config import load_config
    from maporl.distributed.actors import RayRolloutPool, ray_session
    from maporl.tasks import get_task
    from maporl.team import build_team
    from maporl.trainer import step_problems

    cfgs = {
        w: load_config(None, [*RAY[:1], f"ray.rollout_workers={w}", "ray.cpus_per_actor=0.4", *sizes()])
        for w in (1, 2)
    }
    ray = ray_session(cfgs[1])
    team = build_team(cfgs[1], with_adapters=True)
    task = get_task(cfgs[1].task.name)
    pools = {w: RayRolloutPool(cfg) for w, cfg in cfgs.items()}
    seconds: dict[int, list[float]] = {1: [], 2: []}
    tokens: dict[int, int] = {}
    for pool in pools.values():
        pool.sync(team)
    for k in range(rounds + 1):  # round 0 warms up
        for w, pool in pools.items():
            _, rollouts = step_problems(cfgs[w], task, k)
            before, t0 = pool.tokens_generated, time.perf_counter()
            pool.discuss(rollouts, task.name, cfgs[w].discussion, cfgs[w].seed, k)
            took = time.perf_counter() - t0
            if k:
                seconds[w].append(took)
                tokens[w] = tokens.get(w, 0) + pool.tokens_generated - before
    ray.shutdown()
    return {"seconds": seconds, "tokens": tokens}


def measure_startup() -> dict:
    """ray.init, then the default run's actors (2 workers, 3 learners, verifier) until each answers a ping."""
    from maporl.config import load_config
    from maporl.distributed.actors import ray_session
    from maporl.distributed.learners import ray_backends
    from maporl.policy import policy_for
    from maporl.team import build_team

    cfg = load_config(None, [*RAY, *sizes(ray=True)])
    t0 = time.perf_counter()
    ray = ray_session(cfg)
    policy = policy_for(cfg, build_team(cfg, with_adapters=True))
    pool, verifier, updaters = ray_backends(cfg, policy, list(range(cfg.discussion.num_agents)))
    ray.get([a.ping.remote() for a in pool.workers + updaters.actors.handles + verifier.actors.handles])
    ray_s = time.perf_counter() - t0
    ray.shutdown()
    from maporl.generation.registry import build_generator

    t0 = time.perf_counter()
    local = load_config(None, sizes())
    build_generator(local, build_team(local, with_adapters=True))
    return {"ray_startup_s": ray_s, "local_startup_s": time.perf_counter() - t0}


def measure_training(backend: str, steps: int) -> dict:
    """`steps` co-training steps of the default config; every step's seconds."""
    from maporl import trainer
    from maporl.config import load_config

    extra = {"local": [], "ray": RAY, "ray-async": [*RAY, "train.async_rollout=true"]}[backend]
    settings = [*extra, f"train.max_steps={steps}", "train.eval_every=0", "train.checkpoint_every=0"]
    cfg = load_config(None, [*settings, *sizes(ray=backend != "local")])
    with tempfile.TemporaryDirectory() as tmp:
        trainer.train(cfg, Path(tmp), quiet=True, final_eval=False)
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    if backend != "local":
        import ray

        ray.shutdown()
    return {"step_s": [r["time/step"] for r in rows if "time/step" in r]}


def measure(*args: str) -> dict:
    """One measurement, as `--child rollouts --rounds N`, `--child startup` or `--child train-BACKEND --steps N`
    name it."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--child", choices=["rollouts", "startup", "train-local", "train-ray", "train-ray-async"])
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(args)
    if a.child == "rollouts":
        return measure_rollouts(a.rounds)
    if a.child == "startup":
        return measure_startup()
    return measure_training(a.child.removeprefix("train-"), a.steps)


def main() -> None:
    global SMOKE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--child", choices=["rollouts", "startup", "train-local", "train-ray", "train-ray-async"])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one round of 2 steps: that all of it runs (CI)")
    args = ap.parse_args()
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        print("bench/ray_scaling.py needs Ray: pip install 'maporl[ray]'", file=sys.stderr)
        sys.exit(2)
    if args.child:
        print(json.dumps(measure(*sys.argv[1:])))
        return
    SMOKE = args.smoke
    if args.smoke:
        args.rounds, args.steps = 1, 2

    t_start = time.time()
    roll = child("--child", "rollouts", "--rounds", str(args.rounds))
    per_worker = {w: statistics.median(roll["seconds"][str(w)]) for w in (1, 2)}
    rollout_ratio = per_worker[1] / per_worker[2]  # same tokens: tokens/s ratio = time ratio
    tokens_per_s = roll["tokens"]["2"] / args.rounds / per_worker[2]
    print(f"rollout of one step (288 answers): 1 worker {per_worker[1]:.2f} s, 2 workers {per_worker[2]:.2f} s")
    print(f"  ({tokens_per_s:.0f} tokens/s with 2 workers); ratio {rollout_ratio:.2f}")
    startup = child("--child", "startup")
    print(f"start-up: Ray {startup['ray_startup_s']:.1f} s, in-process {startup['local_startup_s']:.1f} s")
    step_s: dict[str, list[float]] = {"local": [], "ray": [], "ray-async": []}
    for _ in range(args.rounds):
        for backend in step_s:
            times = child("--child", f"train-{backend}", "--steps", str(args.steps))["step_s"][1:]
            step_s[backend].append(statistics.median(times))
            print(f"{backend}: median {step_s[backend][-1]:.2f} s/step over {len(times)} steps")
    median = {b: statistics.median(v) for b, v in step_s.items()}
    steps_ratio, async_ratio = median["local"] / median["ray"], median["ray"] / median["ray-async"]
    print(f"steps/min: in-process {60 / median['local']:.1f}, Ray {60 / median['ray']:.1f}; ratio {steps_ratio:.2f}")
    print(f"  Ray with train.async_rollout=true {60 / median['ray-async']:.1f}: {async_ratio:.2f} x the synchronous")
    print(f"took {time.time() - t_start:.0f} s")
    print(
        json.dumps(
            {
                "rollout_ratio_2w_vs_1w": round(rollout_ratio, 3),
                "steps_per_min_ratio_ray_vs_local": round(steps_ratio, 3),
                "steps_per_min_ratio_async_vs_sync": round(async_ratio, 3),
                "ray_startup_s": round(startup["ray_startup_s"], 1),
                "local_startup_s": round(startup["local_startup_s"], 1),
                "rollout_s": {w: [round(x, 2) for x in roll["seconds"][str(w)]] for w in (1, 2)},
                "step_s": {b: [round(x, 2) for x in v] for b, v in step_s.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
