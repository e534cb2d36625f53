"""`backend=ray` learners: one Ray actor per trained adapter (per agent; one for `discussion.adapters=shared`), and
restarting lost actors mid-step.

Each learner actor builds the team and policy the driver builds, loads the driver's weights, and owns its group's
`AgentUpdater` (learner.py): adapter, value head, optimizer and LR schedule. The driver's `Learner` draws the
minibatch order and sends each actor only its own rows; the actors compute their no-gradient passes and their
optimizer steps at the same time, and share no gradients (their parameters are disjoint). After an update the driver
pulls the groups' LoRA tensors and value heads (for checkpoints and the rollout workers' sync). An actor's
micro-batches are the ones the in-process learner cuts, so both give bit for bit the same weights.

Faults: every step starts from `Learner.snapshot()`, whose updaters' part is each learner's (weights, optimizer and
schedule): the objects its last update returned beside its stats (one call per learner a step). They are objects the
driver owns in the object store, so they outlive the actor. When an actor dies mid-step, `RayRecovery.recover`
restarts every lost actor in its bundle, `Learner.restore` rolls every learner back to its snapshot, the rollout
workers get the step's starting weights under the step's starting version, and the trainer redoes the step.

Out of scope, and where it would go: one agent's update spread over several GPUs (FSDP) would be a learner actor
that is a group of actors over one adapter, with `AgentUpdater` wrapping an FSDP module; the driver side is unchanged.
"""

from __future__ import annotations

from maporl.distributed.actors import Actors, RayRolloutPool, RayVerifier, placement_group, ray_session, threads
from maporl.learner import AgentUpdater, GroupPlan, GroupResult, Learner, LearnerSnapshot, parameter_groups
from maporl.policy import Policy
from maporl.records import EpisodeBatch


class _LearnerWorker:
    """Lives in a learner actor: the team and policy the driver builds, and one group's updater."""

    def __init__(self, cfg, group: int, agents: list[int], total_steps: int, weights: dict):
        import torch

        from maporl.policy import policy_for
        from maporl.team import build_team

        torch.set_num_threads(threads(cfg))
        self.policy = policy_for(cfg, build_team(cfg, with_adapters=True))
        self.policy.load_weights(weights)
        self.agents = agents
        groups, _ = parameter_groups(self.policy, agents)
        self.updater = AgentUpdater(self.policy, cfg.algo, group, groups[group], total_steps)

    def ping(self) -> bool:
        return True

    def old_policy(self, batch: EpisodeBatch, values: bool, logp: bool, reference: bool):
        return self.updater.old_policy(batch, values, logp, reference)

    def run(self, plan: GroupPlan, step: int):
        """The update, and what the driver needs after it without another call: the group's weights (to sync) and
        its optimizer state (with the weights, the next step's snapshot). Called with num_returns=3."""
        result = self.updater.run(plan, step)
        return result, self.weights(), self.updater.state_dict()

    def state(self) -> dict:
        return self.updater.state_dict()

    def load(self, state: dict) -> None:
        self.updater.load_state_dict(state)

    def weights(self) -> dict:
        return self.policy.weights(self.agents)

    def load_weights(self, weights: dict) -> None:
        self.policy.load_weights(weights)

    def snapshot(self):
        """(weights, optimizer state); called with num_returns=2."""
        return self.weights(), self.updater.state_dict()

    def restore(self, weights: dict, state: dict) -> None:
        self.policy.load_weights(weights)
        self.updater.load_state_dict(state)


class RayUpdaters:
    """`learner.Updaters` over one learner actor per parameter group."""

    def __init__(self, cfg, policy: Policy, agents: list[int], placement, first_bundle: int):
        groups, group_of = parameter_groups(policy, agents)
        self.groups = list(groups)
        members = {g: [a for a in agents if group_of[a] == g] for g in self.groups}
        self.ray = ray_session(cfg)
        start = self.ray.put(policy.weights())
        total_steps = cfg.train.max_steps

        def args(k: int) -> tuple:
            g = self.groups[k]
            return cfg, g, members[g], total_steps, start

        self.actors = Actors(cfg, "learner", _LearnerWorker, args, len(self.groups), placement, first_bundle)
        self.snapshots: list | None = None  # per learner: (weights, optimizer state) object references

    def _actor(self, group: int):
        return self.actors.handles[self.groups.index(group)]

    def old_policy(self, batches: dict[int, EpisodeBatch], values: bool, logp: bool, reference: bool) -> dict:
        refs = {g: self._actor(g).old_policy.remote(b, values, logp, reference) for g, b in batches.items()}
        return dict(zip(refs, self.actors.get(list(refs.values())), strict=True))

    def run(self, plans: dict[int, GroupPlan], step: int) -> dict[int, GroupResult]:
        """Every group's update at once; each also returns its weights and optimizer state as objects, which are the
        next step's snapshot and what `pull` reads (one call per learner a step instead of three)."""
        assert list(plans) == self.groups, "an update runs every group"
        refs = [self._actor(g).run.options(num_returns=3).remote(plans[g], step) for g in self.groups]
        results = self.actors.get([r[0] for r in refs])
        self.snapshots = [(r[1], r[2]) for r in refs]
        return dict(zip(self.groups, results, strict=True))

    def state(self) -> dict[int, dict]:
        return dict(zip(self.groups, self.actors.get([a.state.remote() for a in self.actors.handles]), strict=True))

    def load(self, states: dict[int, dict]) -> None:
        self.actors.get([self._actor(g).load.remote(state) for g, state in states.items()])
        self.snapshots = None  # the learners' state changed

    def pull(self, policy: Policy) -> None:
        refs = [w for w, _ in self.snapshots] if self.snapshots else [a.weights.remote() for a in self.actors.handles]
        for weights in self.actors.get(refs):
            policy.load_weights(weights)

    def push(self, policy: Policy) -> None:
        ref = self.ray.put(policy.weights())
        self.actors.get([a.load_weights.remote(ref) for a in self.actors.handles])
        self.snapshots = None

    def snapshot(self) -> list:
        """Every learner's (weights, optimizer state) as object references the driver owns (they outlive the
        actors): those the last update returned, or new ones."""
        if self.snapshots is None:
            self.snapshots = [tuple(a.snapshot.options(num_returns=2).remote()) for a in self.actors.handles]
        return self.snapshots

    def restore(self, snapshots: list) -> None:
        """Restart lost learners, roll every learner back to its snapshot."""
        self.actors.restart_lost()
        calls = [a.restore.remote(w, st) for a, (w, st) in zip(self.actors.handles, snapshots, strict=True)]
        self.actors.get(calls)
        self.snapshots = snapshots  # still the learners' state


def ray_backends(cfg, policy: Policy, agents: list[int]) -> tuple[RayRolloutPool, RayVerifier, RayUpdaters]:
    """The rollout pool, the verifier and the learner actors, in one placement group."""
    learners = len(parameter_groups(policy, agents)[0])
    placement = placement_group(cfg, learners)
    pool = RayRolloutPool(cfg, placement)
    return pool, RayVerifier(cfg), RayUpdaters(cfg, policy, agents, placement, first_bundle=cfg.ray.rollout_workers)


class RayRecovery:
    """Marks where a step starts and, when an actor is lost in it, puts every actor back there."""

    def __init__(self, pool: RayRolloutPool, verifier: RayVerifier, learner: Learner, team):
        self.pool, self.verifier, self.learner, self.team = pool, verifier, learner, team
        self.mark: tuple[int, LearnerSnapshot] | None = None

    def begin(self) -> None:
        self.mark = (self.pool.weights_version, self.learner.snapshot())

    def recover(self) -> None:
        version, snapshot = self.mark
        self.learner.restore(snapshot)
        self.verifier.restart_lost()
        self.pool.recover(self.team, version)
