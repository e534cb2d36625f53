"""One optimisation step of every trained agent on a step's episodes. No algorithm math here: advantages and value
targets arrive computed (advantages.py), losses come from losses.py.

Micro-batching with gradient accumulation (weights chosen so the accumulated gradient equals one big batch's),
per-agent gradient clipping, and a non-finite guard that skips an agent's update instead of corrupting it.
"""

from __future__ import annotations

import sys
from collections import defaultdict

import torch

from maporl import faults, losses
from maporl.config import AlgoConfig
from maporl.policy import Policy
from maporl.records import EpisodeBatch, TrainBatch
from maporl.utils import lr_factor

Stats = dict[str, list[float]]


class Learner:
    """The optimizer, scheduler and minibatch RNG of every trained agent (agents sharing an adapter share a group)."""

    def __init__(self, policy: Policy, cfg: AlgoConfig, trained_agents: list[int], total_steps: int, seed: int):
        self.policy, self.cfg = policy, cfg
        self.groups: dict[int, list[torch.nn.Parameter]] = {}  # owner agent -> the parameters its update changes
        self.owner: dict[int, int] = {}  # agent -> the agent owning its parameter group ('shared': the first one)
        owner_of_param: dict[int, int] = {}
        for a in trained_agents:
            all_params = policy.agent_parameters(a)
            params = [p for p in all_params if id(p) not in owner_of_param]
            owner_of_param.update((id(p), a) for p in params)
            if params:
                self.groups[a] = params
            self.owner[a] = owner_of_param[id(all_params[0])] if all_params else a
        self.optimizer = torch.optim.AdamW([p for ps in self.groups.values() for p in ps], lr=cfg.lr, weight_decay=0)
        updates = total_steps * cfg.epochs * cfg.minibatches
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: lr_factor(k, updates, cfg.lr_final_ratio)
        )
        self.generator = torch.Generator().manual_seed(seed)  # minibatch order
        self.consecutive_nonfinite = 0  # updates in a row in which some agent was skipped

    def old_policy(self, batch: EpisodeBatch) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """(log π_old, V_old, log π_ref) of every scored position (E, L-1), without gradients; None where not needed.

        With one epoch and one minibatch and no value heads the old policy is the current one: the update uses the
        detached log-probabilities of its own forward pass, so this extra forward is skipped.
        """
        ppo = self.policy.value_heads is not None
        on_policy = not ppo and self.cfg.epochs == 1 and self.cfg.minibatches == 1
        old_logp, old_values = (None, None) if on_policy else self._forward_no_grad(batch, with_values=ppo)
        ref_logp = self._forward_no_grad(batch, False, reference=True)[0] if self.cfg.kl_coef > 0 else None
        return old_logp, old_values, ref_logp

    def _forward_no_grad(self, batch: EpisodeBatch, with_values: bool, reference: bool = False):
        """`Policy.forward` over the micro-batches an update of every row at once would use (so that, unchanged,
        the policy gives bit for bit the same numbers there); (E, L-1) outputs on the CPU, left-padded back to full
        width."""
        e, width = batch.answer_mask.shape
        logp, values = torch.zeros((e, width)), torch.zeros((e, width)) if with_values else None
        with torch.no_grad():
            for part in self._micro_batches(batch, torch.arange(e)):
                lp, v = self.policy.forward(batch.rows(part), with_values, reference)
                logp[part, width - lp.shape[1] :] = lp.cpu()
                if values is not None:
                    values[part, width - v.shape[1] :] = v.cpu()
        return logp, values

    def _micro_batches(self, batch: EpisodeBatch, rows: torch.Tensor) -> list[torch.Tensor]:
        """`rows` cut into micro-batches of similar lengths: sorted by length (ties by index, so the cut does not
        depend on the order the rows come in), at most `algo.micro_batch_size` rows each and, with
        `algo.micro_batch_tokens`, at most that many tokens once padded to the longest row (a longer row goes
        alone). Each micro-batch is trimmed to its longest row, so sorting cuts the padding computed; the
        accumulated gradient is the same sum in any cut."""
        rows = rows.sort().values
        lengths = batch.attention_mask[rows].sum(1)
        order = torch.argsort(lengths, stable=True)
        rows, lengths = rows[order].tolist(), lengths[order].tolist()
        budget, most = self.cfg.micro_batch_tokens, self.cfg.micro_batch_size
        parts: list[list[int]] = []
        for row, length in zip(rows, lengths, strict=True):
            full = parts and (len(parts[-1]) == most or (budget and (len(parts[-1]) + 1) * length > budget))
            if not parts or full:
                parts.append([])
            parts[-1].append(row)
        return [torch.tensor(part) for part in parts]

    def update(self, batch: TrainBatch) -> dict[str, float]:
        """`algo.epochs` passes over the episodes, `algo.minibatches` optimizer steps each; the mean of every stat."""
        owners = self._owners(batch.episodes.agent)
        # A non-finite advantage or return (a broken verifier or reward, say) takes that agent out of this step.
        bad = ~(_finite_rows(batch.advantages) & _finite_rows(batch.returns))
        skip = set(owners[bad].tolist())
        keep = torch.tensor([o not in skip for o in owners.tolist()], dtype=torch.bool)
        batch = batch.rows(keep.nonzero().squeeze(1))
        if len(batch.episodes.agent) == 0:
            return self._no_update(skip)
        stats: Stats = defaultdict(list)
        had_nonfinite = bool(skip)
        for _ in range(self.cfg.epochs):
            order = torch.randperm(len(batch.episodes.agent), generator=self.generator)
            for minibatch in order.chunk(self.cfg.minibatches):
                skipped = self._optimizer_step(batch, minibatch, set(skip), stats)
                had_nonfinite |= bool(skipped)
        out = {k: sum(v) / len(v) for k, v in stats.items() if v}
        out["lr"] = self.scheduler.get_last_lr()[0]
        self.consecutive_nonfinite = self.consecutive_nonfinite + 1 if had_nonfinite else 0
        return out

    def _owners(self, agents: torch.Tensor) -> torch.Tensor:
        """The parameter group of each row's agent (agents sharing an adapter share a group)."""
        return torch.tensor([self.owner.get(a, a) for a in agents.tolist()], dtype=torch.long)

    def _no_update(self, skip: set[int]) -> dict[str, float]:
        """No episode left to train on: every agent's was non-finite (a failed update), or there were none."""
        if skip:
            self.consecutive_nonfinite += 1
            for _ in range(self.cfg.epochs * self.cfg.minibatches):  # the schedule counts optimizer steps
                self.scheduler.step()
        return {"nonfinite_updates": float(len(skip)), "lr": self.scheduler.get_last_lr()[0]}

    def _optimizer_step(self, batch: TrainBatch, minibatch: torch.Tensor, skip: set[int], stats: Stats) -> set[int]:
        """Accumulate the minibatch's gradient over micro-batches, clip it per agent, step. Returns the agents
        skipped (non-finite loss or gradient, or arriving in `skip`); their parameters are left untouched."""
        self.optimizer.zero_grad(set_to_none=True)
        total = _units(batch.episodes.answer_mask[minibatch], self.cfg.agg).clamp_min(1)
        for part in self._micro_batches(batch.episodes, minibatch):
            sub = batch.rows(part).to(self.policy.device)
            # The rows' adapters stay routed through the backward pass (activation checkpointing recomputes there).
            with self.policy.routed(sub.episodes):
                loss = self._micro_loss(sub, total.to(self.policy.device), skip, stats)
                if loss is not None:
                    loss.backward()
        for agent, params in self.groups.items():
            norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm) if agent not in skip else None
            if norm is None or not torch.isfinite(norm):
                for p in params:  # skip this agent's update rather than corrupt its adapter
                    p.grad = None
                skip.add(agent)
            else:
                stats[f"grad_norm/agent{agent}"].append(norm.item())
        skipped = sorted(skip & set(self.groups))
        for agent in self.groups:
            stats[f"nonfinite/agent{agent}"].append(float(agent in skip))
        stats["nonfinite_updates"].append(float(len(skipped)))
        if skipped:
            names = ", ".join(map(str, skipped))
            print(f"maporl: warning: non-finite loss, gradient or reward; skipped agent(s) {names}", file=sys.stderr)
        faults.point("update")
        self.optimizer.step()
        self.scheduler.step()
        return set(skipped)

    def _micro_loss(self, sub: TrainBatch, total: torch.Tensor, skip: set[int], stats: Stats) -> torch.Tensor | None:
        """One mixed-adapter forward for every agent's rows; the sum of the agents' losses, each weighted by its
        share of the minibatch (`total` units). An agent whose loss is not finite joins `skip`."""
        ppo = self.policy.value_heads is not None
        logp, values = self.policy.forward(sub.episodes, with_values=ppo)
        owners, cfg = self._owners(sub.episodes.agent), self.cfg
        loss_sum = None
        # The loss is a sum over agents' rows, so it is built per agent: a non-finite part skips only that agent.
        for agent in owners.unique().tolist():
            if agent in skip:
                continue
            rows = (owners == agent).nonzero().squeeze(1)
            mask, lp = sub.episodes.answer_mask[rows], logp[rows]
            old = lp.detach() if sub.old_logprobs is None else sub.old_logprobs[rows]
            policy_loss, pstats = losses.policy_loss(lp, old, sub.advantages[rows], mask, cfg.clip_eps, cfg.agg)
            loss, extra = policy_loss, {}
            if ppo:
                vl = losses.value_loss(
                    values[rows], sub.old_values[rows], sub.returns[rows], mask, cfg.value_clip_eps, cfg.agg
                )
                loss, extra = loss + cfg.vf_coef * vl, {"loss/value": vl.item()}
            elif sub.ref_logprobs is not None:  # grpo/rloo: the KL is a loss term (ppo has it in the reward)
                per_token = losses.kl_penalty(lp, sub.ref_logprobs[rows], cfg.kl_estimator, mask)
                kl = losses.aggregate(per_token, mask, cfg.agg)
                loss, extra = loss + cfg.kl_coef * kl, {"kl": kl.item()}
            if not torch.isfinite(loss):
                skip.add(agent)
                continue
            weighted = loss * _units(mask, cfg.agg) / total
            loss_sum = weighted if loss_sum is None else loss_sum + weighted
            for k, v in {"loss/policy": policy_loss.item(), **extra, **pstats}.items():
                stats[k].append(float(v))
        return loss_sum


def _units(mask: torch.Tensor, agg: str) -> torch.Tensor:
    """What a micro-batch's loss is a mean over: its answer tokens (token_mean) or its answers with at least one
    token (sequence means). Weighting micro-batches by it makes the accumulated gradient one pass's."""
    return mask.sum() if agg == "token_mean" else mask.any(-1).sum()


def _finite_rows(x: torch.Tensor | None) -> torch.Tensor | bool:
    """(E,) True where every entry of the row is finite (True for no tensor)."""
    return True if x is None else torch.isfinite(x).all(dim=1)
