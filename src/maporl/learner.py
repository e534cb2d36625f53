"""One optimisation step of every trained agent on a step's episodes (no algorithm math inline: see
advantages.py / losses.py).

Micro-batching with gradient accumulation (weights chosen so the accumulated gradient equals one big batch's),
per-agent gradient clipping, and a non-finite guard that skips an agent's update instead of corrupting it.
"""

from __future__ import annotations

import sys

import torch

from maporl import advantages as adv
from maporl import faults, losses
from maporl.config import AlgoConfig
from maporl.policy import EpisodeBatch, Policy


class Learner:
    def __init__(self, policy: Policy, cfg: AlgoConfig, trained_agents: list[int], total_steps: int, seed: int):
        self.policy, self.cfg, self.agents = policy, cfg, trained_agents
        # Agents that share an adapter (layout 'shared') are one parameter group: clip and guard it once.
        groups: dict[int, list[torch.nn.Parameter]] = {}
        owner_of_param: dict[int, int] = {}
        self.owner: dict[int, int] = {}  # agent -> the group holding its parameters
        for a in trained_agents:
            all_params = list(policy.agent_parameters(a))
            params = [p for p in all_params if id(p) not in owner_of_param]
            owner_of_param.update((id(p), a) for p in params)
            if params:
                groups[a] = params
            self.owner[a] = owner_of_param[id(all_params[0])] if all_params else a
        self.groups = groups
        self.optimizer = torch.optim.AdamW([p for ps in groups.values() for p in ps], lr=cfg.lr, weight_decay=0.0)
        updates = max(1, total_steps * cfg.epochs * cfg.minibatches)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: 1.0 - (1.0 - cfg.lr_final_ratio) * min(1.0, k / updates)
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.consecutive_nonfinite = 0

    def _micro(self, batch: EpisodeBatch, with_values: bool, reference: bool = False):
        """Forward over micro-batches without gradients; (E, L-1) outputs, left-padded back to full width."""
        e, width = batch.answer_mask.shape
        logp, values = torch.zeros((e, width)), torch.zeros((e, width)) if with_values else None
        with torch.no_grad():
            for part in torch.arange(e).split(self.cfg.micro_batch_size):
                lp, v = self.policy.forward(batch.rows(part), with_values, reference)
                logp[part, width - lp.shape[1] :] = lp
                if values is not None:
                    values[part, width - v.shape[1] :] = v
        return logp, values

    def update(self, batch: EpisodeBatch, episode_advantages: torch.Tensor | None) -> dict[str, float]:
        """PPO (episode_advantages None: GAE on value heads) or group-relative (one advantage per episode)."""
        cfg, ppo = self.cfg, episode_advantages is None
        # A non-finite reward or advantage (e.g. a broken verifier) takes that agent out of this step's update.
        bad_rows = ~torch.isfinite(batch.reward)
        if episode_advantages is not None:
            bad_rows |= ~torch.isfinite(episode_advantages)
        owners = self._owners(batch.agent)
        bad = set(owners[bad_rows].tolist())
        if bad:
            keep = torch.tensor([o not in bad for o in owners.tolist()])
            batch = batch.rows(keep.nonzero().squeeze(1))
            episode_advantages = None if episode_advantages is None else episode_advantages[keep]
        self.skip = set(bad)
        if len(batch.agent) == 0:
            return self._skipped_step()
        mask = batch.answer_mask
        # One pass over the data with a single minibatch: the old policy is the current one, its log-probs are the
        # detached log-probs of that pass, so the extra forward is skipped.
        on_policy = not ppo and cfg.epochs == 1 and cfg.minibatches == 1
        old_logp, old_values = (None, None) if on_policy else self._micro(batch, with_values=ppo)
        ref_logp = self._micro(batch, False, reference=True)[0] if cfg.kl_coef > 0 else None
        if ppo:
            ref = ref_logp if ref_logp is not None else old_logp
            token_r = adv.token_rewards(batch.reward, old_logp, ref, mask, cfg.kl_coef)
            advantages, returns = adv.gae(token_r, old_values, mask, gamma=1.0, lam=cfg.gae_lambda)
            advantages = _whiten(advantages, mask, batch, cfg.whiten)
        else:
            advantages, returns = episode_advantages[:, None].expand_as(mask).clone(), None

        stats: dict[str, list[float]] = {}
        self.step_had_nonfinite = bool(self.skip)
        n = len(batch.agent)
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=self.generator)
            for mb in order.chunk(cfg.minibatches):
                self._minibatch(batch, mb, old_logp, old_values, ref_logp, advantages, returns, stats)
        out = {k: sum(v) / len(v) for k, v in stats.items() if v}
        out["lr"] = self.scheduler.get_last_lr()[0]
        self.consecutive_nonfinite = self.consecutive_nonfinite + 1 if self.step_had_nonfinite else 0
        return out

    def _owners(self, agents: torch.Tensor) -> torch.Tensor:
        """The parameter group of each row's agent (agents sharing an adapter share a group)."""
        return torch.tensor([self.owner.get(a, a) for a in agents.tolist()], dtype=torch.long)

    def _skipped_step(self) -> dict[str, float]:
        self.consecutive_nonfinite += 1
        for _ in range(self.cfg.epochs * self.cfg.minibatches):  # the schedule counts optimizer steps: keep aligned
            self.scheduler.step()
        return {"nonfinite_updates": float(len(self.skip)), "lr": self.scheduler.get_last_lr()[0]}

    def _minibatch(self, batch, mb, old_logp, old_values, ref_logp, advantages, returns, stats) -> None:
        cfg, ppo = self.cfg, returns is not None
        self.optimizer.zero_grad(set_to_none=True)

        # Weights make the accumulated gradient equal to one pass over the whole minibatch: each micro-batch counts
        # by its answer tokens (token_mean) or by its answers with at least one token (sequence means).
        def units(mask: torch.Tensor) -> torch.Tensor:
            return mask.sum() if cfg.agg == "token_mean" else mask.any(-1).sum()

        total = units(batch.answer_mask[mb]).clamp_min(1)
        skip = set(self.skip)
        # Micro-batches of similar lengths: each is trimmed to its longest row, so sorting cuts the padding that
        # would otherwise be computed (the accumulated gradient is the same sum in any order).
        mb = mb[torch.argsort(batch.attention_mask[mb].sum(1), stable=True)]
        for part in mb.split(cfg.micro_batch_size):
            sub = batch.rows(part)
            logp, values = self.policy.forward(sub, with_values=ppo)  # one mixed-adapter forward for all agents
            width = logp.shape[1]
            owners = self._owners(sub.agent)
            loss_sum = None
            # The loss is a sum over agents' rows, so it is built per agent: a non-finite part skips only that agent.
            for agent in owners.unique().tolist():
                if agent in skip:
                    continue
                rows = (owners == agent).nonzero().squeeze(1)
                mask = sub.answer_mask[rows]
                lp = logp[rows]
                a = _cut(advantages[part], width)[rows]
                old = lp.detach() if old_logp is None else _cut(old_logp[part], width)[rows]
                pl, pstats = losses.policy_loss(lp, old, a, mask, cfg.clip_eps, cfg.agg)
                loss, extra = pl, {}
                if ppo:
                    old_v, ret = _cut(old_values[part], width)[rows], _cut(returns[part], width)[rows]
                    vl = losses.value_loss(values[rows], old_v, ret, mask, cfg.value_clip_eps, cfg.agg)
                    loss, extra = loss + cfg.vf_coef * vl, {"loss/value": vl.item()}
                elif ref_logp is not None:
                    ref = _cut(ref_logp[part], width)[rows]
                    kl = losses.aggregate(losses.kl_penalty(lp, ref, cfg.kl_estimator, mask), mask, cfg.agg)
                    loss, extra = loss + cfg.kl_coef * kl, {"kl": kl.item()}
                if not torch.isfinite(loss):
                    skip.add(agent)
                    continue
                weighted = loss * units(mask) / total
                loss_sum = weighted if loss_sum is None else loss_sum + weighted
                for k, v in {"loss/policy": pl.item(), **extra, **pstats}.items():
                    stats.setdefault(k, []).append(float(v))
            if loss_sum is not None:
                loss_sum.backward()
        for agent, params in self.groups.items():
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm) if agent not in skip else None
            if norm is None or not torch.isfinite(norm):
                for p in params:  # skip this agent's update rather than corrupt its adapter
                    p.grad = None
                skip.add(agent)
            else:
                stats.setdefault(f"grad_norm/agent{agent}", []).append(norm.item())
        skipped = sorted(skip & set(self.groups))
        for agent in self.groups:
            stats.setdefault(f"nonfinite/agent{agent}", []).append(float(agent in skip))
        stats.setdefault("nonfinite_updates", []).append(float(len(skipped)))
        if skipped:
            names = ", ".join(map(str, skipped))
            print(f"maporl: warning: non-finite loss, gradient or reward; skipped agent(s) {names}", file=sys.stderr)
            self.step_had_nonfinite = True
        faults.point("update")
        self.optimizer.step()
        self.scheduler.step()


def _cut(x: torch.Tensor, width: int) -> torch.Tensor:
    """Right-align a full-width (R, L-1) tensor with a sub-batch trimmed of leading padding columns."""
    return x[:, x.shape[1] - width :]


def _whiten(advantages: torch.Tensor, mask: torch.Tensor, batch: EpisodeBatch, how: str) -> torch.Tensor:
    """Whiten advantages per (agent, turn) group (released code), over the whole batch, or not at all."""
    if how == "none":
        return advantages
    if how == "batch":
        return adv.masked_whiten(advantages, mask)
    out = advantages.clone()
    for key in torch.unique(batch.agent * 1000 + batch.turn):
        rows = (batch.agent * 1000 + batch.turn) == key
        sub_mask = mask[rows]
        if sub_mask.sum() > 1:
            out[rows] = adv.masked_whiten(advantages[rows], sub_mask)
    return out
