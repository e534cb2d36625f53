"""`backend=ray`: rollout workers and the verifier as Ray actors around the same objects as in-process (the learner
actors are in learners.py).

The driver loop does not change: `trainer.train` asks its rollout function for a step's discussions, its generator
for evaluation answers and its verifier for scores. Here the discussions are sharded over `ray.rollout_workers`
generator actors, each running whole discussions (`discussion.run`) for a contiguous shard of the step's problems,
with the shard's offset as `first_index`, so every row draws the seed it draws in-process. Each worker holds its own
copy of the team (base + one LoRA per agent). After every update `sync` puts the trained adapters in the object store
once and every worker loads them under a new version; every transcript records the version that produced it, and
the trainer stops on a stale one. Every actor has a bundle in one placement group: a run gets all it asked for, or
stops at start with one line naming what is missing. `ray.address` (or RAY_ADDRESS) joins an existing cluster.
An actor that dies is restarted in its bundle (`Actors.restart_lost`) and the trainer redoes the step.
Ray is imported lazily; selecting it without `pip install 'maporl[ray]'` is a one-line error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from maporl.errors import UsageError, WorkerLost
from maporl.generation import Completion, GenRequest


def ray_session(cfg):
    try:
        import ray
    except ImportError:
        raise UsageError("backend=ray needs Ray: `pip install 'maporl[ray]'` (or use backend=local)") from None
    if not ray.is_initialized():
        from maporl.distributed.cluster import start_or_join

        start_or_join(cfg.ray.address, cfg.ray.start_timeout_s)
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


def placement_group(cfg, learners: int):
    """One bundle per rollout worker, then one per learner, all placed or none: a cluster short of resources is a
    one-line error at start."""
    from ray.exceptions import GetTimeoutError
    from ray.util.placement_group import placement_group as make_group
    from ray.util.placement_group import remove_placement_group

    ray, r = ray_session(cfg), cfg.ray

    def bundle(gpus: float) -> dict:
        return {"CPU": r.cpus_per_actor} | ({"GPU": gpus} if gpus else {})

    bundles = [bundle(r.gpus_per_rollout_worker)] * r.rollout_workers + [bundle(r.gpus_per_learner)] * learners
    have = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    workers, each = r.rollout_workers, bundle(r.gpus_per_rollout_worker)
    short = UsageError(
        f"the Ray cluster cannot place {workers} rollout worker(s) of {each} and {learners} learner(s) (one per "
        f"trained adapter) of {bundle(r.gpus_per_learner)} (cluster: {have}); lower ray.rollout_workers, "
        "ray.cpus_per_actor (fractions are fine: each actor still gets one thread), ray.gpus_per_rollout_worker or "
        "ray.gpus_per_learner, or add nodes"
    )
    local = not (r.address or os.environ.get("RAY_ADDRESS"))
    if local and any(sum(b.get(k, 0) for b in bundles) > have.get(k, 0) + 1e-9 for k in ("CPU", "GPU")):
        raise short  # a cluster of this machine alone will not grow: no need to wait
    group = make_group([dict(b) for b in bundles], strategy="PACK")
    try:
        ray.get(group.ready(), timeout=r.start_timeout_s)
    except GetTimeoutError:
        remove_placement_group(group)
        raise short from None
    return group


class Actors:
    """Ray actors of one kind, actor k in bundle `first_bundle + k` of the run's placement group (with no group: no
    CPU reserved). `get` turns a lost actor into `WorkerLost`; `restart_lost` starts a new one in the dead one's
    bundle."""

    def __init__(
        self, cfg, role: str, cls: type, args: Callable[[int], tuple], count: int, group=None, first_bundle: int = 0
    ):
        self.ray, self.role, self.cls, self.args = ray_session(cfg), role, cls, args
        self.group, self.first_bundle, self.cfg = group, first_bundle, cfg
        self.handles = [self._start(k) for k in range(count)]

    def _start(self, k: int):
        if self.group is None:
            return self.ray.remote(self.cls).options(num_cpus=0).remote(*self.args(k))
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        r = self.cfg.ray
        gpus = r.gpus_per_learner if self.role == "learner" else r.gpus_per_rollout_worker
        strategy = PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=self.first_bundle + k)
        options = {"num_cpus": r.cpus_per_actor, "num_gpus": gpus, "scheduling_strategy": strategy}
        return self.ray.remote(self.cls).options(**options).remote(*self.args(k))

    def get(self, refs):
        from ray.exceptions import RayActorError, WorkerCrashedError

        try:
            return self.ray.get(refs)
        except (RayActorError, WorkerCrashedError) as e:
            raise WorkerLost(f"a Ray {self.role} actor died ({type(e).__name__})") from None

    def restart_lost(self) -> list[int]:
        """Start a new actor in place of every dead one; the indices restarted."""
        from ray.exceptions import RayActorError

        lost = []
        for k, handle in enumerate(self.handles):
            try:
                self.ray.get(handle.ping.remote())
            except RayActorError:
                lost.append(k)
                self.handles[k] = self._start(k)
        return lost


def threads(cfg) -> int:
    """Torch threads of an actor: its CPUs, at least one."""
    return max(1, int(cfg.ray.cpus_per_actor))


class _GeneratorWorker:
    """Lives in a rollout actor: the same team and generator the in-process backend builds."""

    def __init__(self, cfg):
        import torch

        from maporl.generation.registry import build_generator
        from maporl.team import build_team

        torch.set_num_threads(threads(cfg))
        self.team = build_team(cfg, with_adapters=True)
        self.generator = build_generator(cfg, self.team)

    def ping(self) -> bool:
        return True

    def generate(self, requests):
        return self.generator.generate(requests)

    def discuss(self, problems, task_name: str, discussion_cfg, seed: int, step: int, first_index: int):
        from maporl import discussion, faults
        from maporl.tasks import get_task

        faults.step = step + 1
        return discussion.run(problems, get_task(task_name), self.generator, discussion_cfg, seed, step, first_index)

    def load_adapters(self, states: dict, version: int) -> None:
        """The learners' adapters into this worker's team, then into its generator under `version` (a vLLM engine
        gets them written out under new LoRA ids; HF generation samples from the team itself)."""
        self.team.load_adapters(states)
        self.generator.sync(self.team, version)

    def sleep(self) -> None:
        self.generator.sleep()

    def tokens_generated(self) -> int:
        return self.generator.tokens_generated


class _VerifierWorker:
    def __init__(self, cfg):
        from maporl.tasks import get_task
        from maporl.verifiers import build_verifier

        self.verifier = build_verifier(cfg, get_task(cfg.task.name))

    def ping(self) -> bool:
        return True

    def score(self, transcripts):
        return self.verifier.score(transcripts)


class RayRolloutPool:
    """Generator protocol over `ray.rollout_workers` actors, and `discuss`, the sharded rollout of a step."""

    def __init__(self, cfg, group=None):
        self.group = group or placement_group(cfg, learners=0)
        self.actors = Actors(cfg, "rollout worker", _GeneratorWorker, lambda k: (cfg,), cfg.ray.rollout_workers,
                             self.group, first_bundle=0)  # fmt: skip
        self.weights_version = 0

    @property
    def workers(self) -> list:
        return self.actors.handles

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        requests = list(requests)
        calls = [
            w.generate.remote(requests[a:b])
            for w, (a, b) in zip(self.workers, _shards(len(requests), len(self.workers)), strict=False)
        ]
        return [c for part in self.actors.get(calls) for c in part]

    def discuss(self, problems, task_name: str, discussion_cfg, seed: int, step: int) -> list:
        """Whole discussions, each on one worker: a contiguous shard of the problems per worker."""
        return self.finish(self.start(problems, task_name, discussion_cfg, seed, step))

    def start(self, problems, task_name: str, discussion_cfg, seed: int, step: int) -> list:
        """`discuss` without waiting: the workers' calls (each worker runs its calls in order, so a later `sync`
        reaches a worker after the discussions it was given before)."""
        shards = _shards(len(problems), len(self.workers))
        return [
            w.discuss.remote(list(problems[a:b]), task_name, discussion_cfg, seed, step, a)
            for w, (a, b) in zip(self.workers, shards, strict=False)
        ]

    def finish(self, calls: list) -> list:
        return [tr for part in self.actors.get(calls) for tr in part]

    def sleep(self) -> None:
        """After a rollout: workers with a sleeping vLLM engine (generation.vllm_sleep) hand their GPU share to the
        learners; the next sync wakes them. HF workers hold nothing to release."""
        g = self.actors.cfg.generation
        if g.backend == "vllm" and g.vllm_sleep:
            self.actors.get([w.sleep.remote() for w in self.workers])

    def sync(self, team, version: int | None = None) -> None:
        """The trained adapters go to the object store once; every worker loads them under the next version."""
        self.weights_version = self.weights_version + 1 if version is None else version
        self._load(team, self.weights_version)

    def _load(self, team, version: int) -> None:
        ref = self.actors.ray.put(team.adapter_states())
        self.actors.get([w.load_adapters.remote(ref, version) for w in self.workers])

    def recover(self, team, version: int) -> list[int]:
        """Restart lost workers and give every worker the team's weights under `version` (the step's start: a sync
        cut short may have reached only some). The indices restarted."""
        lost = self.actors.restart_lost()
        self.weights_version = version
        self._load(team, version)
        return lost

    @property
    def tokens_generated(self) -> int:
        return sum(self.actors.get([w.tokens_generated.remote() for w in self.workers]))


class RayVerifier:
    """The verifier in one actor. It holds no bundle and no CPU: scoring runs between rollouts, and the placement
    group holds the CPUs."""

    def __init__(self, cfg):
        self.actors = Actors(cfg, "verifier", _VerifierWorker, lambda k: (cfg,), 1)

    def score(self, transcripts):
        return self.actors.get(self.actors.handles[0].score.remote(list(transcripts)))

    def restart_lost(self) -> bool:
        return bool(self.actors.restart_lost())
