"""`backend=ray`: rollout workers and the verifier as Ray actors around the same objects as in-process.

The driver loop does not change: `trainer.train` asks its rollout function for a step's discussions, its generator
for evaluation answers and its verifier for scores. Here the discussions are sharded over `ray.rollout_workers`
generator actors, each running whole discussions (`discussion.run`) for a contiguous shard of the step's problems,
with the shard's offset as `first_index`, so every row draws the seed it draws in-process. Each worker holds its own
copy of the team (base + one LoRA per agent). After every update `sync` puts the trained adapters in the object store
once and every worker loads them under a new version; every transcript records the version that produced it, and
the trainer stops on a stale one. The actors are placed in one placement group: a run gets all it asked for, or
stops at start with one line naming what is missing. `ray.address` (or RAY_ADDRESS) joins an existing cluster.
Updates stay in the driver, which owns the optimizer state and checkpoints.
Ray is imported lazily; selecting it without `pip install 'maporl[ray]'` is a one-line error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from maporl.errors import UsageError
from maporl.generation import Completion, GenRequest


def _ray(cfg):
    try:
        import ray
    except ImportError:
        raise UsageError("backend=ray needs Ray: `pip install 'maporl[ray]'` (or use backend=local)") from None
    if not ray.is_initialized():
        address = cfg.ray.address or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


def _shards(n: int, parts: int) -> list[tuple[int, int]]:
    """`range(n)` cut into `parts` contiguous (start, end) pieces whose sizes differ by at most one (none empty)."""
    parts = max(1, min(parts, n))
    size, extra = divmod(n, parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (k < extra)
        out.append((start, end))
        start = end
    return out


class _GeneratorWorker:
    """Lives in a rollout actor: the same team and generator the in-process backend builds."""

    def __init__(self, cfg, threads: int):
        import torch

        from maporl.team import build_generator, build_team

        torch.set_num_threads(threads)
        self.team = build_team(cfg, with_adapters=True)
        self.generator = build_generator(cfg, self.team)

    def generate(self, requests):
        return self.generator.generate(requests)

    def discuss(self, problems, task_name: str, discussion_cfg, seed: int, step: int, first_index: int):
        from maporl import discussion
        from maporl.tasks import get_task

        return discussion.run(problems, get_task(task_name), self.generator, discussion_cfg, seed, step, first_index)

    def load_adapters(self, states: dict, version: int) -> None:
        from peft import set_peft_model_state_dict

        for (key, name), state in states.items():
            set_peft_model_state_dict(self.team.models[key], state, adapter_name=name)
        self.generator.weights_version = version

    def tokens_generated(self) -> int:
        return self.generator.tokens_generated


class _VerifierWorker:
    def __init__(self, cfg):
        from maporl.tasks import get_task
        from maporl.verifiers import build_verifier

        self.verifier = build_verifier(cfg, get_task(cfg.task.name))

    def score(self, transcripts):
        return self.verifier.score(transcripts)


def _placement_group(ray, cfg):
    """One bundle per rollout worker, all placed or none: a cluster short of resources is a one-line error at start."""
    from ray.exceptions import GetTimeoutError
    from ray.util.placement_group import placement_group, remove_placement_group

    r = cfg.ray
    bundle = {"CPU": r.cpus_per_actor} | ({"GPU": r.gpus_per_rollout_worker} if r.gpus_per_rollout_worker else {})
    group = placement_group([dict(bundle) for _ in range(r.rollout_workers)], strategy="PACK")
    try:
        ray.get(group.ready(), timeout=r.start_timeout_s)
    except GetTimeoutError:
        remove_placement_group(group)
        have = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
        raise UsageError(
            f"the Ray cluster cannot place {r.rollout_workers} rollout worker(s) of {bundle} (cluster: {have}); "
            "lower ray.rollout_workers, ray.cpus_per_actor or ray.gpus_per_rollout_worker, or add nodes"
        ) from None
    return group


class RayRolloutPool:
    """Generator protocol over `ray.rollout_workers` actors, and `discuss`, the sharded rollout of a step."""

    def __init__(self, cfg):
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        ray = _ray(cfg)
        self._ray, r = ray, cfg.ray
        self.group = _placement_group(ray, cfg)
        threads = max(1, int(r.cpus_per_actor))
        self.workers = [
            ray.remote(_GeneratorWorker)
            .options(
                num_cpus=r.cpus_per_actor,
                num_gpus=r.gpus_per_rollout_worker,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=k),
            )
            .remote(cfg, threads)
            for k in range(r.rollout_workers)
        ]
        self.weights_version = 0

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        requests = list(requests)
        calls = [
            w.generate.remote(requests[a:b])
            for w, (a, b) in zip(self.workers, _shards(len(requests), len(self.workers)), strict=False)
        ]
        return [c for part in self._ray.get(calls) for c in part]

    def discuss(self, problems, task_name: str, discussion_cfg, seed: int, step: int) -> list:
        """Whole discussions, each on one worker: a contiguous shard of the problems per worker."""
        shards = _shards(len(problems), len(self.workers))
        calls = [
            w.discuss.remote(list(problems[a:b]), task_name, discussion_cfg, seed, step, a)
            for w, (a, b) in zip(self.workers, shards, strict=False)
        ]
        return [tr for part in self._ray.get(calls) for tr in part]

    def sleep(self) -> None:
        """The workers keep their own copies of the team: nothing of the learner's to free."""

    def sync(self, team) -> None:
        """The trained adapters go to the object store once; every worker loads them under the next version."""
        states = team.adapter_states()
        self.weights_version += 1
        ref = self._ray.put(states)
        self._ray.get([w.load_adapters.remote(ref, self.weights_version) for w in self.workers])

    @property
    def tokens_generated(self) -> int:
        return sum(self._ray.get([w.tokens_generated.remote() for w in self.workers]))


class RayVerifier:
    def __init__(self, cfg):
        ray = _ray(cfg)
        self._ray = ray
        # No CPU reserved: scoring runs between rollouts, and the workers' placement group holds the CPUs.
        self.actor = ray.remote(num_cpus=0)(_VerifierWorker).remote(cfg)

    def score(self, transcripts):
        return self._ray.get(self.actor.score.remote(list(transcripts)))
