"""One optimisation step of every trained agent on a step's episodes. No algorithm math here: advantages and value
targets arrive computed (advantages.py), losses come from losses.py.

Each parameter group (an agent's adapter and value head; all agents' with a shared adapter) has its own
`AgentUpdater`: optimizer, LR schedule, micro-batches and gradient clipping. Groups share nothing, so an updater can
live in its own process: with backend=ray each is a learner actor (distributed/learners.py), and the `Learner` here,
in the driver, only draws the minibatch order and hands every group its own rows. The group's micro-batches hold its
rows only, so an update gives bit for bit the same weights in one process or spread over actors.

Micro-batching with gradient accumulation (weights chosen so the accumulated gradient equals one big batch's),
per-agent gradient clipping, and a non-finite guard that skips an agent's update instead of corrupting it.
"""

from __future__ import annotations

import copy
import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from maporl import faults, losses
from maporl.config import AlgoConfig
from maporl.policy import Policy
from maporl.records import EpisodeBatch, TrainBatch
from maporl.utils import lr_factor

Stats = dict[str, list[float]]


@dataclass(frozen=True)
class GroupPlan:
    """One parameter group's part of an update: its rows, the minibatch of every optimizer step (indices into those
    rows) and each minibatch's loss units over *every* group's rows, which weigh its loss as one pass over the whole
    minibatch would. `skip`: a non-finite advantage or return took the group out of this step (its schedule still
    steps)."""

    batch: TrainBatch
    minibatches: list[torch.Tensor]
    totals: list[torch.Tensor]
    skip: bool


@dataclass(frozen=True)
class GroupResult:
    stats: Stats
    skipped: list[bool]  # per optimizer step: this group's update was skipped (non-finite)
    lr: float  # after the update


def parameter_groups(policy: Policy, trained_agents: list[int]) -> tuple[dict[int, list], dict[int, int]]:
    """(group -> the parameters its update changes, agent -> its group). A group is named by the first agent whose
    parameters it holds: agents sharing an adapter share that agent's group."""
    groups: dict[int, list[torch.nn.Parameter]] = {}
    group_of: dict[int, int] = {}
    group_of_param: dict[int, int] = {}
    for a in trained_agents:
        all_params = policy.agent_parameters(a)
        params = [p for p in all_params if id(p) not in group_of_param]
        group_of_param.update((id(p), a) for p in params)
        if params:
            groups[a] = params
        group_of[a] = group_of_param[id(all_params[0])] if all_params else a
    return groups, group_of


def micro_batches(batch: EpisodeBatch, rows: torch.Tensor, cfg: AlgoConfig) -> list[torch.Tensor]:
    """`rows` cut into micro-batches of similar lengths: sorted by length (ties by index, so the cut does not depend
    on the order the rows come in), at most `algo.micro_batch_size` rows each and, with `algo.micro_batch_tokens`, at
    most that many tokens once padded to the longest row (a longer row goes alone). Each micro-batch is trimmed to its
    longest row, so sorting cuts the padding computed; the accumulated gradient is the same sum in any cut."""
    rows = rows.sort().values
    lengths = batch.attention_mask[rows].sum(1)
    order = torch.argsort(lengths, stable=True)
    rows, lengths = rows[order].tolist(), lengths[order].tolist()
    budget, most = cfg.micro_batch_tokens, cfg.micro_batch_size
    parts: list[list[int]] = []
    for row, length in zip(rows, lengths, strict=True):
        full = parts and (len(parts[-1]) == most or (budget and (len(parts[-1]) + 1) * length > budget))
        if not parts or full:
            parts.append([])
        parts[-1].append(row)
    return [torch.tensor(part) for part in parts]


class AgentUpdater:
    """One parameter group's optimizer, LR schedule, no-gradient passes and optimizer steps."""

    def __init__(self, policy: Policy, cfg: AlgoConfig, group: int, params: list, total_steps: int):
        self.policy, self.cfg, self.group, self.params = policy, cfg, group, params
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0)
        updates = total_steps * cfg.epochs * cfg.minibatches
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: lr_factor(k, updates, cfg.lr_final_ratio)
        )

    def old_policy(self, batch: EpisodeBatch, values: bool, logp: bool, reference: bool):
        """(log π_old or None, V_old or None, log π_ref or None) of the group's rows, without gradients."""
        old_logp, old_values = self.forward_no_grad(batch, values) if logp or values else (None, None)
        ref_logp = self.forward_no_grad(batch, False, reference=True)[0] if reference else None
        return old_logp, old_values, ref_logp

    def forward_no_grad(self, batch: EpisodeBatch, with_values: bool, reference: bool = False):
        """`Policy.forward` over the micro-batches the update cuts (so that, unchanged, the policy gives bit for bit
        the same numbers there); (E, L-1) outputs on the CPU, left-padded back to full width."""
        e, width = batch.answer_mask.shape
        logp, values = torch.zeros((e, width)), torch.zeros((e, width)) if with_values else None
        with torch.no_grad():
            for part in micro_batches(batch, torch.arange(e), self.cfg):
                lp, v = self.policy.forward(batch.rows(part), with_values, reference)
                logp[part, width - lp.shape[1] :] = lp.cpu()
                if values is not None:
                    values[part, width - v.shape[1] :] = v.cpu()
        return logp, values

    def run(self, plan: GroupPlan, step: int = 0) -> GroupResult:
        """Every optimizer step of the plan; `step` (the training step) only names fault-injection points."""
        faults.step = step or faults.step
        stats: Stats = defaultdict(list)
        skipped = [self._optimizer_step(plan, k, stats) for k in range(len(plan.minibatches))]
        return GroupResult(dict(stats), skipped, self.scheduler.get_last_lr()[0])

    def _optimizer_step(self, plan: GroupPlan, k: int, stats: Stats) -> bool:
        """Accumulate minibatch k's gradient over micro-batches, clip it, step. True when the update was skipped (a
        non-finite loss or gradient, or a non-finite advantage in the plan); the parameters are then untouched."""
        self.optimizer.zero_grad(set_to_none=True)
        skip = plan.skip
        total = plan.totals[k].to(self.policy.device)
        minibatch = plan.minibatches[k]
        for part in micro_batches(plan.batch.episodes, minibatch, self.cfg) if len(minibatch) and not skip else []:
            sub = plan.batch.rows(part).to(self.policy.device)
            # The rows' adapters stay routed through the backward pass (activation checkpointing recomputes there).
            with self.policy.routed(sub.episodes):
                loss = self._micro_loss(sub, total, stats)
                if loss is None:
                    skip = True
                    break
                loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm) if not skip else None
        if norm is None or not torch.isfinite(norm):
            for p in self.params:  # skip this agent's update rather than corrupt its adapter
                p.grad = None
            skip = True
        else:
            stats[f"grad_norm/agent{self.group}"].append(norm.item())
        stats[f"nonfinite/agent{self.group}"].append(float(skip))
        faults.point("update")
        self.optimizer.step()
        self.scheduler.step()
        return skip

    def _micro_loss(self, sub: TrainBatch, total: torch.Tensor, stats: Stats) -> torch.Tensor | None:
        """The group's loss on a micro-batch, weighted by its share of the minibatch (`total` units); None when it is
        not finite."""
        cfg, ppo = self.cfg, self.policy.value_heads is not None
        lp, values = self.policy.forward(sub.episodes, with_values=ppo)
        mask = sub.episodes.answer_mask
        old = lp.detach() if sub.old_logprobs is None else sub.old_logprobs
        policy_loss, pstats = losses.policy_loss(lp, old, sub.advantages, mask, cfg.clip_eps, cfg.agg)
        loss, extra = policy_loss, {}
        if ppo:
            vl = losses.value_loss(values, sub.old_values, sub.returns, mask, cfg.value_clip_eps, cfg.agg)
            loss, extra = loss + cfg.vf_coef * vl, {"loss/value": vl.item()}
        elif sub.ref_logprobs is not None:  # grpo/rloo: the KL is a loss term (ppo has it in the reward)
            kl = losses.aggregate(losses.kl_penalty(lp, sub.ref_logprobs, cfg.kl_estimator, mask), mask, cfg.agg)
            loss, extra = loss + cfg.kl_coef * kl, {"kl": kl.item()}
        if not torch.isfinite(loss):
            return None
        for key, v in {"loss/policy": policy_loss.item(), **extra, **pstats}.items():
            stats[key].append(float(v))
        return loss * _units(mask, cfg.agg) / total

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


class Updaters(Protocol):
    """Where the parameter groups' `AgentUpdater`s live: in this process (`LocalUpdaters`) or in one Ray learner actor
    each (distributed/learners.py). Every call names the groups it is for and runs them concurrently where they live
    apart; results come back by group."""

    def old_policy(
        self, batches: dict[int, EpisodeBatch], values: bool, logp: bool, reference: bool
    ) -> dict[int, Any]:
        """`AgentUpdater.old_policy` of each group on its rows."""

    def run(self, plans: dict[int, GroupPlan], step: int) -> dict[int, GroupResult]:
        """Every group's update (`AgentUpdater.run`)."""

    def state(self) -> dict[int, dict]:
        """Every group's optimizer and schedule (for checkpoints)."""

    def load(self, states: dict[int, dict]) -> None:
        """Put back what `state` gave."""

    def snapshot(self) -> Any:
        """Every group's weights, optimizer and schedule as they are now, kept apart from the updaters."""

    def restore(self, snapshot: Any) -> None:
        """Back to a `snapshot` (with Ray: restarting lost learner actors first)."""

    def pull(self, policy: Policy) -> None:
        """After an update or a restore: make the driver's policy hold the trained weights (a no-op where it is the
        trained one)."""

    def push(self, policy: Policy) -> None:
        """Make the updaters hold the driver policy's weights (a checkpoint was loaded into it)."""


class LocalUpdaters:
    """Every group's updater in this process, training the driver's own policy, run one after the other."""

    def __init__(self, updaters: dict[int, AgentUpdater]):
        self.updaters = updaters

    def old_policy(
        self, batches: dict[int, EpisodeBatch], values: bool, logp: bool, reference: bool
    ) -> dict[int, Any]:
        return {g: self.updaters[g].old_policy(b, values, logp, reference) for g, b in batches.items()}

    def run(self, plans: dict[int, GroupPlan], step: int) -> dict[int, GroupResult]:
        return {g: self.updaters[g].run(plan, step) for g, plan in plans.items()}

    def state(self) -> dict[int, dict]:
        return {g: u.state_dict() for g, u in self.updaters.items()}

    def load(self, states: dict[int, dict]) -> None:
        for g, state in states.items():
            self.updaters[g].load_state_dict(state)

    def snapshot(self) -> dict[int, tuple[list[torch.Tensor], dict]]:
        return {
            g: ([p.detach().clone() for p in u.params], copy.deepcopy(u.state_dict()))
            for g, u in self.updaters.items()
        }

    def restore(self, snapshot: dict[int, tuple[list[torch.Tensor], dict]]) -> None:
        with torch.no_grad():
            for g, (params, state) in snapshot.items():
                for p, saved in zip(self.updaters[g].params, params, strict=True):
                    p.copy_(saved)
                self.updaters[g].load_state_dict(copy.deepcopy(state))

    def pull(self, policy: Policy) -> None:
        """The updaters trained the driver's own policy: nothing to copy."""

    def push(self, policy: Policy) -> None:
        """The updaters train the driver's own policy: nothing to copy."""


@dataclass(frozen=True)
class LearnerSnapshot:
    """Where a step starts, for redoing it: the updaters' snapshot, the minibatch RNG, the non-finite count."""

    updaters: Any
    rng: torch.Tensor
    consecutive_nonfinite: int


class Learner:
    """Every trained group's update, in this process or spread over `updaters` (Ray learner actors); owns the
    minibatch order (one RNG, so the same rows share a minibatch wherever the groups live)."""

    def __init__(
        self,
        policy: Policy,
        cfg: AlgoConfig,
        trained_agents: list[int],
        total_steps: int,
        seed: int,
        updaters: Updaters | None = None,
    ):
        self.policy, self.cfg = policy, cfg
        self.groups, self.group_of = parameter_groups(policy, trained_agents)
        self.updaters = updaters or LocalUpdaters(
            {g: AgentUpdater(policy, cfg, g, params, total_steps) for g, params in self.groups.items()}
        )
        self.generator = torch.Generator().manual_seed(seed)  # minibatch order
        self.consecutive_nonfinite = 0  # updates in a row in which some agent was skipped

    def old_policy(
        self, batch: EpisodeBatch, behaviour_logp: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """(log π_old, V_old, log π_ref) of every scored position (E, L-1), without gradients; None where not needed.

        With one epoch and one minibatch and no value heads the old policy is the current one: the update uses the
        detached log-probabilities of its own forward pass, so this extra forward is skipped. `behaviour_logp=False`
        where the caller already has log π_old (async rollouts: the sampler's), so only V_old and log π_ref are made.
        """
        ppo = self.policy.value_heads is not None
        logp = behaviour_logp and (ppo or self.cfg.epochs > 1 or self.cfg.minibatches > 1)
        reference = self.cfg.kl_coef > 0
        if not (logp or reference):
            return None, None, None
        groups = self._groups(batch.agent)
        rows = {g: (groups == g).nonzero().squeeze(1) for g in self.groups}
        rows = {g: r for g, r in rows.items() if len(r)}
        parts = self.updaters.old_policy({g: batch.rows(r) for g, r in rows.items()}, ppo, logp, reference)
        e, width = batch.answer_mask.shape
        out: list[torch.Tensor | None] = []
        for k, wanted in enumerate((logp, ppo, reference)):
            full = torch.zeros((e, width)) if wanted else None
            for g, r in rows.items():
                if full is not None:
                    part = parts[g][k]
                    full[r, width - part.shape[1] :] = part
            out.append(full)
        return out[0], out[1], out[2]

    def update(self, batch: TrainBatch, step: int = 0) -> dict[str, float]:
        """`algo.epochs` passes over the episodes, `algo.minibatches` optimizer steps each; the mean of every stat."""
        groups = self._groups(batch.episodes.agent)
        # A non-finite advantage or return (a broken verifier or reward, say) takes that agent out of this step.
        bad = ~(_finite_rows(batch.advantages) & _finite_rows(batch.returns))
        skip = set(groups[bad].tolist())
        keep = torch.tensor([g not in skip for g in groups.tolist()], dtype=torch.bool).nonzero().squeeze(1)
        batch, groups = batch.rows(keep), groups[keep]
        if len(groups):
            orders = [torch.randperm(len(groups), generator=self.generator) for _ in range(self.cfg.epochs)]
            minibatches = [mb for order in orders for mb in order.chunk(self.cfg.minibatches)]
        else:  # nothing to train on: a failed update (the schedule counts it) or no episodes at all (no step)
            minibatches = [torch.zeros(0, dtype=torch.long)] * (self.cfg.epochs * self.cfg.minibatches) if skip else []
        totals = [_units(batch.episodes.answer_mask[mb], self.cfg.agg).clamp_min(1) for mb in minibatches]
        plans = {g: self._plan(batch, groups, g, minibatches, totals, g in skip) for g in self.groups}
        results = self.updaters.run(plans, step)
        stats: Stats = defaultdict(list)
        for g in self.groups:  # group order: the same means whichever process ran which group
            for key, values in results[g].stats.items():
                stats[key] += values
        out = {key: sum(v) / len(v) for key, v in stats.items() if v}
        flags = [results[g].skipped for g in self.groups]
        out["nonfinite_updates"] = sum(map(sum, flags)) / len(minibatches) if minibatches else 0.0
        out["lr"] = results[next(iter(self.groups))].lr
        skipped = [g for g in self.groups if any(results[g].skipped)]
        if skipped:  # printed here: a Ray learner actor's stderr does not reach the user
            names = ", ".join(map(str, skipped))
            print(f"maporl: warning: non-finite loss, gradient or reward; skipped agent(s) {names}", file=sys.stderr)
        had_nonfinite = bool(skipped)
        self.consecutive_nonfinite = self.consecutive_nonfinite + 1 if had_nonfinite else 0
        self.updaters.pull(self.policy)
        return out

    def _plan(self, batch, groups, group, minibatches, totals, skip: bool) -> GroupPlan:
        """The group's rows, and every minibatch as indices into them (order kept: the same micro-batches)."""
        rows = (groups == group).nonzero().squeeze(1)
        local = torch.full((len(groups),), -1, dtype=torch.long)
        local[rows] = torch.arange(len(rows))
        mine = [local[mb[groups[mb] == group]] for mb in minibatches]
        return GroupPlan(batch.rows(rows), mine, totals, skip)

    def _groups(self, agents: torch.Tensor) -> torch.Tensor:
        """The parameter group of each row's agent (agents sharing an adapter share a group)."""
        return torch.tensor([self.group_of.get(a, a) for a in agents.tolist()], dtype=torch.long)

    def snapshot(self) -> LearnerSnapshot:
        """Everything an update changes, as it is now: what a lost Ray actor's step is rolled back to."""
        return LearnerSnapshot(self.updaters.snapshot(), self.generator.get_state(), self.consecutive_nonfinite)

    def restore(self, snapshot: LearnerSnapshot) -> None:
        """Back to `snapshot`: the groups' weights, optimizers and schedules (in the driver's policy too), the
        minibatch RNG and the non-finite count."""
        self.updaters.restore(snapshot.updaters)
        self.updaters.pull(self.policy)
        self.generator.set_state(snapshot.rng)
        self.consecutive_nonfinite = snapshot.consecutive_nonfinite

    def state_dict(self) -> dict:
        """Every group's optimizer and schedule, the minibatch RNG and the non-finite count (for checkpoints)."""
        states = self.updaters.state()
        return {
            "groups": {g: states[g] for g in self.groups},
            "learner_rng": self.generator.get_state(),
            "consecutive_nonfinite": self.consecutive_nonfinite,
        }

    def load_state_dict(self, state: dict) -> None:
        self.updaters.push(self.policy)
        self.updaters.load({g: state["groups"][g] for g in self.groups})
        self.generator.set_state(state["learner_rng"])
        self.consecutive_nonfinite = state["consecutive_nonfinite"]


def _units(mask: torch.Tensor, agg: str) -> torch.Tensor:
    """What a micro-batch's loss is a mean over: its answer tokens (token_mean) or its answers with at least one
    token (sequence means). Weighting micro-batches by it makes the accumulated gradient one pass's."""
    return mask.sum() if agg == "token_mean" else mask.any(-1).sum()


def _finite_rows(x: torch.Tensor | None) -> torch.Tensor | bool:
    """(E,) True where every entry of the row is finite (True for no tensor)."""
    return True if x is None else torch.isfinite(x).all(dim=1)
