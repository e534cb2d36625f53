"""`backend=ray` learners: one Ray actor per trained adapter (per agent; one for `discussion.adapters=shared`), and
restarting lost actors mid-step.

Each learner actor builds the team and policy the driver builds, loads the driver's weights, and owns its group's
`AgentUpdater` (learner.py): adapter, value head, optimizer and LR schedule. The driver's `Learner` draws the
minibatch order and sends each actor only its own rows; the actors compute their no-gradient passes and their
optimizer steps at the same time, and share no gradients (their parameters are disjoint). After an update the driver
pulls the groups' LoRA tensors and value heads (for checkpoints and the rollout workers' sync). An actor's
micro-batches are the ones the in-process learner cuts, so both give bit for bit the same weights.

Faults: every step starts from a snapshot of each learner (weights, optimizer and schedule): the objects its last
update returned beside its stats (one call per learner a step). They are objects the driver owns in the object
store, so they outlive the actor. When an actor dies mid-step, `RayRecovery.recover` restarts every lost actor in its
bundle, rolls every learner back to its snapshot, gives the rollout workers the step's starting weights under the
step's starting version, and the trainer redoes the step.

Out of scope, and where it would go: one agent's update spread over several GPUs (FSDP) would be a learner actor
that is a group of actors over one adapter, with `AgentUpdater` wrapping an FSDP module; the driver side is unchanged.
"""

from __future__ import annotations

from typing import Any

from maporl.distributed.actors import Actors, RayRolloutPool, RayVerifier, placement_group, ray_session, threads
from maporl.learner import AgentUpdater, parameter_groups
from maporl.policy import Policy


def weights_of(policy: Policy, agents: list[int] | None = None) -> dict:
    """The adapters (by (model key, adapter name)) and value heads (by agent) of `agents` (default: all), detached on
    the CPU."""
    agents = list(range(len(policy.team.slots))) if agents is None else agents
    wanted = {(policy.team.slots[a].model_key, policy.team.slots[a].adapter) for a in agents}
    adapters = {k: v for k, v in policy.team.adapter_states().items() if k in wanted}
    heads = {}
    if policy.value_heads is not None:
        heads = {
            a: {k: v.detach().cpu().clone() for k, v in policy.value_heads[a].state_dict().items()} for a in agents
        }
    return {"adapters": adapters, "value_heads": heads}


def load_weights(policy: Policy, weights: dict) -> None:
    from peft import set_peft_model_state_dict

    for (key, name), state in weights["adapters"].items():
        set_peft_model_state_dict(policy.team.models[key], state, adapter_name=name)
    for agent, state in weights["value_heads"].items():
        policy.value_heads[agent].load_state_dict(state)


class _LearnerWorker:
    """Lives in a learner actor: the team and policy the driver builds, and one group's updater."""

    def __init__(self, cfg, owner: int, agents: list[int], total_steps: int, weights: dict):
        import torch

        from maporl.policy import policy_for
        from maporl.team import build_team

        torch.set_num_threads(threads(cfg))
        self.policy = policy_for(cfg, build_team(cfg, with_adapters=True))
        load_weights(self.policy, weights)
        self.agents = agents
        groups, _ = parameter_groups(self.policy, agents)
        self.updater = AgentUpdater(self.policy, cfg.algo, owner, groups[owner], total_steps)

    def ping(self) -> bool:
        return True

    def call(self, method: str, *args) -> Any:
        return getattr(self.updater, method)(*args)

    def run(self, plan, step: int):
        """The update, and what the driver needs after it without another call: the group's weights (to sync) and
        its optimizer state (with the weights, the next step's snapshot). Called with num_returns=3."""
        result = self.updater.run(plan, step)
        return result, self.weights(), self.updater.state_dict()

    def weights(self) -> dict:
        return weights_of(self.policy, self.agents)

    def load_weights(self, weights: dict) -> None:
        load_weights(self.policy, weights)

    def snapshot(self):
        """(weights, optimizer state); called with num_returns=2."""
        return self.weights(), self.updater.state_dict()

    def restore(self, weights: dict, state: dict) -> None:
        load_weights(self.policy, weights)
        self.updater.load_state_dict(state)


class RayUpdaters:
    """`learner.Updaters` over one learner actor per parameter group."""

    def __init__(self, cfg, policy: Policy, agents: list[int], group, first_bundle: int):
        groups, owner = parameter_groups(policy, agents)
        self.owners = list(groups)
        members = {o: [a for a in agents if owner[a] == o] for o in self.owners}
        self.ray = ray_session(cfg)
        start = self.ray.put(weights_of(policy))
        total_steps = cfg.train.max_steps

        def args(k: int) -> tuple:
            o = self.owners[k]
            return cfg, o, members[o], total_steps, start

        self.actors = Actors(cfg, "learner", _LearnerWorker, args, len(self.owners), group, first_bundle)
        self.snapshots: list | None = None  # per learner: (weights, optimizer state) object references

    def _actor(self, owner: int):
        return self.actors.handles[self.owners.index(owner)]

    def call(self, method: str, args: dict[int, tuple]) -> dict[int, Any]:
        if method == "run":
            return self._run(args)
        refs = {o: self._actor(o).call.remote(method, *a) for o, a in args.items()}
        values = self.actors.get(list(refs.values()))
        if method not in ("old_policy", "state_dict"):
            self.snapshots = None  # the learners' state changed
        return dict(zip(refs, values, strict=True))

    def _run(self, args: dict[int, tuple]) -> dict[int, Any]:
        """Every group's update at once; each also returns its weights and optimizer state as objects, which are the
        next step's snapshot and what `pull` reads (one call per learner a step instead of three)."""
        assert list(args) == self.owners, "an update runs every group"
        refs = [self._actor(o).run.options(num_returns=3).remote(*args[o]) for o in self.owners]
        results = self.actors.get([r[0] for r in refs])
        self.snapshots = [(r[1], r[2]) for r in refs]
        return dict(zip(self.owners, results, strict=True))

    def pull(self, policy: Policy) -> None:
        refs = [w for w, _ in self.snapshots] if self.snapshots else [a.weights.remote() for a in self.actors.handles]
        for weights in self.actors.get(refs):
            load_weights(policy, weights)

    def push(self, policy: Policy) -> None:
        ref = self.ray.put(weights_of(policy))
        self.actors.get([a.load_weights.remote(ref) for a in self.actors.handles])
        self.snapshots = None

    def snapshot(self) -> list:
        """Every learner's (weights, optimizer state) as object references the driver owns (they outlive the
        actors): those the last update returned, or new ones."""
        if self.snapshots is None:
            self.snapshots = [tuple(a.snapshot.options(num_returns=2).remote()) for a in self.actors.handles]
        return self.snapshots

    def restore(self, snapshots: list) -> list[int]:
        """Restart lost learners, roll every learner back to its snapshot; the indices restarted."""
        lost = self.actors.restart_lost()
        calls = [a.restore.remote(w, st) for a, (w, st) in zip(self.actors.handles, snapshots, strict=True)]
        self.actors.get(calls)
        self.snapshots = snapshots  # still the learners' state
        return lost


def ray_backends(cfg, policy: Policy, agents: list[int]) -> tuple[RayRolloutPool, RayVerifier, RayUpdaters]:
    """The rollout pool, the verifier and the learner actors, in one placement group."""
    learners = len(parameter_groups(policy, agents)[0])
    group = placement_group(cfg, learners)
    pool = RayRolloutPool(cfg, group)
    return pool, RayVerifier(cfg), RayUpdaters(cfg, policy, agents, group, first_bundle=cfg.ray.rollout_workers)


class RayRecovery:
    """Marks where a step starts and, when an actor is lost in it, puts every actor back there."""

    def __init__(self, pool: RayRolloutPool, verifier: RayVerifier, learner, team):
        self.pool, self.verifier, self.learner, self.team = pool, verifier, learner, team
        self.mark: tuple | None = None

    def begin(self) -> None:
        updaters: RayUpdaters = self.learner.updaters
        rng = self.learner.generator.get_state()
        self.mark = (self.pool.weights_version, rng, self.learner.consecutive_nonfinite, updaters.snapshot())

    def recover(self) -> None:
        version, rng, nonfinite, snapshots = self.mark
        self.learner.updaters.restore(snapshots)
        self.learner.updaters.pull(self.learner.policy)
        self.learner.generator.set_state(rng)
        self.learner.consecutive_nonfinite = nonfinite
        self.verifier.restart_lost()
        self.pool.recover(self.team, version)
