"""The agents' trainable policies: log-probabilities (and values) of answers under each agent's adapter.

One episode = one agent's answer at one turn. Episodes of all agents go through one forward pass per model: peft's
`adapter_names` applies each row's own adapter, and gradients reach only that adapter. The reference policy is the
same model with adapters switched off, so no second copy of the weights is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
import torch.utils.checkpoint
from peft import PeftModel
from torch import nn

from maporl import lora_batch
from maporl.records import EpisodeBatch
from maporl.team import Team


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor, temperature: float = 1.0, chunk: int = 1024):
    """log softmax(logits / temperature) at `index`: (..., V) logits, (...) index -> (...) float32.

    As TRL's `selective_log_softmax`: rows are upcast to float32 and reduced `chunk` at a time, so no float32 copy of
    all the logits exists at once (B x L x 152k for Qwen2.5). Under autograd each chunk is recomputed in the backward
    pass rather than kept, when the logits are not float32 already (then the chunks are views and cost nothing).
    """
    flat, idx = logits.reshape(-1, logits.shape[-1]), index.reshape(-1, 1)

    def part(rows: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        scaled = rows.float() / temperature
        return (scaled.gather(-1, ids) - scaled.logsumexp(-1, keepdim=True)).squeeze(-1)

    recompute = torch.is_grad_enabled() and logits.requires_grad and logits.dtype != torch.float32
    pieces = [
        torch.utils.checkpoint.checkpoint(part, flat[k : k + chunk], idx[k : k + chunk], use_reentrant=False)
        if recompute
        else part(flat[k : k + chunk], idx[k : k + chunk])
        for k in range(0, flat.shape[0], chunk)
    ]
    out = torch.cat(pieces) if pieces else flat.new_zeros(0, dtype=torch.float32)
    return out.reshape(index.shape)


class Policy:
    """The team's models with their adapters, plus one value head per agent when the algorithm needs values.

    Args:
        team: the agents' models, tokenizers and adapter slots.
        value_heads: give every agent a value head (PPO).
        temperature: the sampling temperature; log-probabilities are those of softmax(logits / temperature), the
            distribution the tokens were drawn from (as TRL and verl do; 0, greedy, counts as 1).
        autocast: run the models' forward in bfloat16 autocast (adapters, value heads, optimizer state and the
            log-softmax stay float32).
        activation_checkpointing: recompute each decoder layer's activations in the backward pass instead of
            keeping them (transformers' `activation_checkpointing_enable`; `gradient_checkpointing_enable` before
            5.24).
    """

    def __init__(
        self,
        team: Team,
        value_heads: bool,
        temperature: float = 1.0,
        autocast: bool = False,
        activation_checkpointing: bool = False,
    ):
        self.team = team
        self.temperature, self.autocast = temperature or 1.0, autocast
        self.device = next(iter(team.models.values())).device
        self.value_heads: nn.ModuleList | None = None
        if value_heads:
            # Zero-initialised: values start at 0, the first updates are plain policy-gradient steps.
            sizes = [team.models[s.model_key].config.get_text_config().hidden_size for s in team.slots]
            self.value_heads = nn.ModuleList(nn.Linear(h, 1) for h in sizes).to(self.device)
            for head in self.value_heads:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        self.checkpointed: list[nn.Module] = []  # decoder layers recomputed in the backward pass
        for m in team.models.values():
            for name, p in m.named_parameters():
                p.requires_grad_("lora_" in name)
            if activation_checkpointing:
                self.checkpointed += _checkpoint_layers(m)

    @contextmanager
    def _checkpointing(self, on: bool) -> Iterator[None]:
        """The checkpointed layers in training mode while open, when `on`. Never left on: transformers before 5.24
        drops a training-mode layer's KV cache even without gradients, so generation from the same model would
        attend to nothing but the newest token."""
        for layer in self.checkpointed:
            layer.training = on
        try:
            yield
        finally:
            for layer in self.checkpointed:
                layer.training = False

    def agent_parameters(self, agent: int) -> list[nn.Parameter]:
        """What an update of `agent` changes: its adapter (shared by all in the 'shared' layout) and value head."""
        slot = self.team.slots[agent]
        model = self.team.models[slot.model_key]
        params = [p for n, p in model.named_parameters() if "lora_" in n and f".{slot.adapter}." in n]
        if self.value_heads is not None:
            params += list(self.value_heads[agent].parameters())
        return params

    def weights(self, agents: list[int] | None = None) -> dict:
        """The adapters (by (model key, adapter name)) and value heads (by agent) of `agents` (default: all),
        detached on the CPU: what learner actors and the driver exchange (`load_weights` takes it back)."""
        agents = list(range(len(self.team.slots))) if agents is None else agents
        wanted = {(self.team.slots[a].model_key, self.team.slots[a].adapter) for a in agents}
        adapters = {k: v for k, v in self.team.adapter_states().items() if k in wanted}
        heads = {}
        if self.value_heads is not None:
            heads = {
                a: {k: v.detach().cpu().clone() for k, v in self.value_heads[a].state_dict().items()} for a in agents
            }
        return {"adapters": adapters, "value_heads": heads}

    def load_weights(self, weights: dict) -> None:
        """Set what `weights` holds (adapters through `Team.load_adapters`, value heads by agent)."""
        self.team.load_adapters(weights["adapters"])
        for agent, state in weights["value_heads"].items():
            self.value_heads[agent].load_state_dict(state)

    def _rows_by_model(self, batch: EpisodeBatch, reference: bool) -> list[tuple[str, torch.Tensor, list[str]]]:
        """(model key, its rows, their adapter names) for every model with rows in the batch; each model's rows are
        grouped by adapter, so each adapter's rows are one slice in the mixed forward (lora_batch.py)."""
        out = []
        for key in self.team.models:
            rows = [r for r in range(len(batch.agent)) if self.team.slots[int(batch.agent[r])].model_key == key]
            rows.sort(key=lambda r: self.team.slots[int(batch.agent[r])].adapter or "")
            # The reference is the base: "__base__" rows skip every adapter. (peft's disable_adapter() would do too,
            # but on exit it re-runs set_adapter, which freezes every adapter but the first one.)
            names = [
                "__base__" if reference else self.team.slots[int(batch.agent[r])].adapter or "__base__" for r in rows
            ]
            if rows:
                out.append((key, torch.tensor(rows), names))
        return out

    @contextmanager
    def routed(self, batch: EpisodeBatch, reference: bool = False) -> Iterator[None]:
        """Every model's rows go to their own adapters while open: wrap a forward *and its backward* in it, so that
        activation checkpointing's recomputation routes the rows as the forward did."""
        with ExitStack() as stack:
            for key, _, names in self._rows_by_model(batch, reference):
                stack.enter_context(lora_batch.routing(self.team.models[key], names))
            yield

    def forward(self, batch: EpisodeBatch, with_values: bool, reference: bool = False):
        """Log-probabilities (E, L-1) of each next token under its agent's policy, and values (E, L-1) or None, on
        the models' device. Only the answer span is computed: every row's answer ends at the last column, so the
        logits of the last `longest answer + 1` positions are all that is needed (`logits_to_keep`); the columns
        before it are 0.

        reference=True: under the base with adapters disabled (the KL reference).
        """
        e, width = batch.input_ids.shape
        span = int(batch.answer_mask.sum(1).max()) if e else 0
        logprobs = torch.zeros((e, width - 1), device=self.device)
        values = torch.zeros((e, width - 1), device=self.device) if with_values else None
        for key, index, names in self._rows_by_model(batch, reference):
            model = self.team.models[key]
            ids = batch.input_ids[index].to(self.device)
            attention = batch.attention_mask[index].to(self.device)
            with (
                lora_batch.routing(model, names),
                torch.autocast(self.device.type, torch.bfloat16, self.autocast),
                self._checkpointing(torch.is_grad_enabled()),
            ):
                out = model(
                    input_ids=ids,
                    attention_mask=attention,
                    logits_to_keep=span + 1,
                    output_hidden_states=with_values,
                    use_cache=False,  # one pass over whole sequences: a KV cache would only cost memory
                )
            targets = ids[:, width - span :]  # the token each kept position predicts
            lp = selective_log_softmax(out.logits[:, :-1], targets, self.temperature)
            logprobs = logprobs.index_put((index.to(self.device),), torch.nn.functional.pad(lp, (width - 1 - span, 0)))
            if values is not None and self.value_heads is not None:
                hidden = out.hidden_states[-1][:, width - 1 - span : width - 1].float()
                agents = batch.agent[index].tolist()  # rows of one model: one hidden size
                weight = torch.stack([self.value_heads[a].weight[0] for a in agents])  # (R, H): each row's own head
                bias = torch.stack([self.value_heads[a].bias[0] for a in agents])
                v = (hidden * weight[:, None, :]).sum(-1) + bias[:, None]
                values = values.index_put((index.to(self.device),), torch.nn.functional.pad(v, (width - 1 - span, 0)))
        return logprobs, values


def _checkpoint_layers(model) -> list[nn.Module]:
    """transformers' activation checkpointing, on a model that stays in eval mode; returns the decoder layers it
    applies to. transformers recomputes a layer only while the layer is in training mode, and peft's mixed-adapter
    batches want eval mode, so `Policy._checkpointing` sets the layers' own flags (not their submodules', dropout
    included) for the forward passes that keep a graph, and nowhere else."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    base = model.get_base_model() if isinstance(model, PeftModel) else model
    # transformers 5.24 renamed gradient_checkpointing_enable (5.17-5.20, which GPU images and vLLM 0.33 get) to
    # activation_checkpointing_enable and deprecated the old name: call whichever this install has.
    enable = getattr(base, "activation_checkpointing_enable", None)
    if enable is not None:
        enable({"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return [m for m in base.modules() if isinstance(m, GradientCheckpointingLayer)]


def policy_for(cfg, team: Team) -> Policy:
    """The trained policy of a run's config over `team` (the trainer's, and each Ray learner actor's)."""
    return Policy(
        team,
        value_heads=cfg.algo.name == "ppo",
        temperature=cfg.generation.temperature,
        autocast=cfg.model.autocast,
        activation_checkpointing=cfg.model.activation_checkpointing,
    )
