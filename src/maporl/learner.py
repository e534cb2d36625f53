"""One optimisation step of every trained agent on a step's episodes. No algorithm math here: advantages and value
targets arrive computed (advantages.py), losses come from losses.py.

Each parameter group (an agent's adapter and value head; all agents' with a shared adapter) has its own
`AgentUpdater`: optimizer, LR schedule, micro-batches and gradient clipping. Groups share nothing, so an updater can
live in its own process: with backend=ray each is a learner actor (ray_learners.py), and the `Learner` here, in the
driver, only draws the minibatch order and hands every group its own rows. The group's micro-batches hold its rows
only, so an update gives bit for bit the same weights in one process or spread over actors.

Micro-batching with gradient accumulation (weights chosen so the accumulated gradient equals one big batch's),
per-agent gradient clipping, and a non-finite guard that skips an agent's update instead of corrupting it.
"""

from __future__ import annotations

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
class OwnerPlan:
    """One parameter group's part of an update: its rows, the minibatch of every optimizer step (indices into those
    rows) and each minibatch's loss units over *every* group's rows, which weigh its loss as one pass over the whole
    minibatch would. `skip`: a non-finite advantage or return took the group out of this step (its schedule still
    steps)."""

    batch: TrainBatch
    minibatches: list[torch.Tensor]
    totals: list[torch.Tensor]
    skip: bool


@dataclass(frozen=True)
class OwnerResult:
    stats: Stats
    skipped: list[bool]  # per optimizer step: this group's update was skipped (non-finite)
    lr: float  # after the update


def parameter_groups(policy: Policy, trained_agents: list[int]) -> tuple[dict[int, list], dict[int, int]]:
    """(owner agent -> the parameters its update changes, agent -> its owner). Agents sharing an adapter share the
    group of the first of them."""
    groups: dict[int, list[torch.nn.Parameter]] = {}
    owner: dict[int, int] = {}
    owner_of_param: dict[int, int] = {}
    for a in trained_agents:
        all_params = policy.agent_parameters(a)
        params = [p for p in all_params if id(p) not in owner_of_param]
        owner_of_param.update((id(p), a) for p in params)
        if params:
            groups[a] = params
        owner[a] = owner_of_param[id(all_params[0])] if all_params else a
    return groups, owner


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

    def __init__(self, policy: Policy, cfg: AlgoConfig, owner: int, params: list, total_steps: int):
        self.policy, self.cfg, self.owner, self.params = policy, cfg, owner, params
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

    def run(self, plan: OwnerPlan, step: int = 0) -> OwnerResult:
        """Every optimizer step of the plan; `step` (the training step) only names fault-injection points."""
        faults.step = step or faults.step
        stats: Stats = defaultdict(list)
        skipped = [self._optimizer_step(plan, k, stats) for k in range(len(plan.minibatches))]
        return OwnerResult(dict(stats), skipped, self.scheduler.get_last_lr()[0])

    def _optimizer_step(self, plan: OwnerPlan, k: int, stats: Stats) -> bool:
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
            stats[f"grad_norm/agent{self.owner}"].append(norm.item())
        stats[f"nonfinite/agent{self.owner}"].append(float(skip))
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
    """Where the groups' updaters run: `call(method, {owner: args})` runs `AgentUpdater.method(*args)` for every
    listed owner (concurrently where they live apart) and gives {owner: result}."""

    def call(self, method: str, args: dict[int, tuple]) -> dict[int, Any]: ...

    def pull(self, policy: Policy) -> None:
        """After an update: make the driver's policy hold the trained weights (a no-op where it is the trained one)."""
        ...

    def push(self, policy: Policy) -> None:
        """Make the updaters hold the driver policy's weights (a checkpoint was loaded into it)."""
        ...


class LocalUpdaters:
    """Every group's updater in this process, run one after the other."""

    def __init__(self, updaters: dict[int, AgentUpdater]):
        self.updaters = updaters

    def call(self, method: str, args: dict[int, tuple]) -> dict[int, Any]:
        return {owner: getattr(self.updaters[owner], method)(*a) for owner, a in args.items()}

    def pull(self, policy: Policy) -> None:
        """The updaters trained the driver's own policy: nothing to copy."""

    def push(self, policy: Policy) -> None:
        """The updaters train the driver's own policy: nothing to copy."""


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
        self.groups, self.owner = parameter_groups(policy, trained_agents)
        self.updaters = updaters or LocalUpdaters(
            {o: AgentUpdater(policy, cfg, o, params, total_steps) for o, params in self.groups.items()}
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
        owners = self._owners(batch.agent)
        rows = {o: (owners == o).nonzero().squeeze(1) for o in self.groups}
        rows = {o: r for o, r in rows.items() if len(r)}
        parts = self.updaters.call("old_policy", {o: (batch.rows(r), ppo, logp, reference) for o, r in rows.items()})
        e, width = batch.answer_mask.shape
        out: list[torch.Tensor | None] = []
        for k, wanted in enumerate((logp, ppo, reference)):
            full = torch.zeros((e, width)) if wanted else None
            for o, r in rows.items():
                if full is not None:
                    part = parts[o][k]
                    full[r, width - part.shape[1] :] = part
            out.append(full)
        return out[0], out[1], out[2]

    def update(self, batch: TrainBatch, step: int = 0) -> dict[str, float]:
        """`algo.epochs` passes over the episodes, `algo.minibatches` optimizer steps each; the mean of every stat."""
        owners = self._owners(batch.episodes.agent)
        # A non-finite advantage or return (a broken verifier or reward, say) takes that agent out of this step.
        bad = ~(_finite_rows(batch.advantages) & _finite_rows(batch.returns))
        skip = set(owners[bad].tolist())
        keep = torch.tensor([o not in skip for o in owners.tolist()], dtype=torch.bool).nonzero().squeeze(1)
        batch, owners = batch.rows(keep), owners[keep]
        if len(owners):
            orders = [torch.randperm(len(owners), generator=self.generator) for _ in range(self.cfg.epochs)]
            minibatches = [mb for order in orders for mb in order.chunk(self.cfg.minibatches)]
        else:  # nothing to train on: a failed update (the schedule counts it) or no episodes at all (no step)
            minibatches = [torch.zeros(0, dtype=torch.long)] * (self.cfg.epochs * self.cfg.minibatches) if skip else []
        totals = [_units(batch.episodes.answer_mask[mb], self.cfg.agg).clamp_min(1) for mb in minibatches]
        plans = {o: (self._plan(batch, owners, o, minibatches, totals, o in skip), step) for o in self.groups}
        results: dict[int, OwnerResult] = self.updaters.call("run", plans)
        stats: Stats = defaultdict(list)
        for o in self.groups:  # group order: the same means whichever process ran which group
            for key, values in results[o].stats.items():
                stats[key] += values
        out = {key: sum(v) / len(v) for key, v in stats.items() if v}
        flags = [results[o].skipped for o in self.groups]
        out["nonfinite_updates"] = sum(map(sum, flags)) / len(minibatches) if minibatches else 0.0
        out["lr"] = results[next(iter(self.groups))].lr
        skipped = [o for o in self.groups if any(results[o].skipped)]
        if skipped:  # printed here: a Ray learner actor's stderr does not reach the user
            names = ", ".join(map(str, skipped))
            print(f"maporl: warning: non-finite loss, gradient or reward; skipped agent(s) {names}", file=sys.stderr)
        had_nonfinite = bool(skipped)
        self.consecutive_nonfinite = self.consecutive_nonfinite + 1 if had_nonfinite else 0
        self.updaters.pull(self.policy)
        return out

    def _plan(self, batch, owners, owner, minibatches, totals, skip: bool) -> OwnerPlan:
        """The owner's rows, and every minibatch as indices into them (order kept: the same micro-batches)."""
        rows = (owners == owner).nonzero().squeeze(1)
        local = torch.full((len(owners),), -1, dtype=torch.long)
        local[rows] = torch.arange(len(rows))
        mine = [local[mb[owners[mb] == owner]] for mb in minibatches]
        return OwnerPlan(batch.rows(rows), mine, totals, skip)

    def _owners(self, agents: torch.Tensor) -> torch.Tensor:
        """The parameter group of each row's agent (agents sharing an adapter share a group)."""
        return torch.tensor([self.owner.get(a, a) for a in agents.tolist()], dtype=torch.long)

    def state_dict(self) -> dict:
        """Every group's optimizer and schedule, the minibatch RNG and the non-finite count (for checkpoints)."""
        states = self.updaters.call("state_dict", {o: () for o in self.groups})
        return {
            "groups": {o: states[o] for o in self.groups},
            "learner_rng": self.generator.get_state(),
            "consecutive_nonfinite": self.consecutive_nonfinite,
        }

    def load_state_dict(self, state: dict) -> None:
        groups = state["groups"] if "groups" in state else _split_single_optimizer(state, self.groups)
        self.updaters.push(self.policy)
        self.updaters.call("load_state_dict", {o: (groups[o],) for o in self.groups})
        self.generator.set_state(state["learner_rng"])
        self.consecutive_nonfinite = state.get("consecutive_nonfinite", 0)


def _split_single_optimizer(state: dict, groups: dict[int, list]) -> dict[int, dict]:
    """Checkpoints written before one optimizer per group held one optimizer over every group's parameters, in group
    order: cut its per-parameter state into the groups' (the schedule is the same for all)."""
    opt, out, start = state["optimizer"], {}, 0
    for owner, params in groups.items():
        index = range(start, start + len(params))
        param_group = {**opt["param_groups"][0], "params": list(range(len(params)))}
        per_param = {k - start: v for k, v in opt["state"].items() if k in index}
        optimizer = {"state": per_param, "param_groups": [param_group]}
        out[owner] = {"optimizer": optimizer, "scheduler": state["scheduler"]}
        start += len(params)
    return out


def _units(mask: torch.Tensor, agg: str) -> torch.Tensor:
    """What a micro-batch's loss is a mean over: its answer tokens (token_mean) or its answers with at least one
    token (sequence means). Weighting micro-batches by it makes the accumulated gradient one pass's."""
    return mask.sum() if agg == "token_mean" else mask.any(-1).sum()


def _finite_rows(x: torch.Tensor | None) -> torch.Tensor | bool:
    """(E,) True where every entry of the row is finite (True for no tensor)."""
    return True if x is None else torch.isfinite(x).all(dim=1)
