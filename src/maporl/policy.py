"""The agents' trainable policies: log-probabilities (and values) of answers under each agent's adapter.

One episode = one agent's answer at one turn. Episodes of all agents go through one forward pass per model: peft's
`adapter_names` applies each row's own adapter, and gradients reach only that adapter. The reference policy is the
same model with adapters switched off, so no second copy of the weights is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from maporl.records import EpisodeBatch, Transcript
from maporl.team import Team


def encode_episodes(
    tokenizers, transcripts: Sequence[Transcript], episodes: Sequence[tuple[int, int, int]]
) -> EpisodeBatch:
    """Tokenise (problem b, agent i, turn t) episodes: the prompt the agent saw, then its answer and end-of-turn.

    `tokenizers`: one tokenizer for every agent, or a list indexed by agent (heterogeneous teams).

    The answer is re-tokenised from its text; old log-probabilities are computed on the same tokens, so the
    update stays consistent with itself.
    """
    rows, answer_lens, pads = [], [], []
    for b, i, t in episodes:
        tokenizer = tokenizers[i] if isinstance(tokenizers, (list, tuple)) else tokenizers
        answer = transcripts[b].answers[t][i]
        prompt = tokenizer.apply_chat_template(list(answer.prompt), add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer.response, add_special_tokens=False)["input_ids"]
        if not answer.truncated:  # a cut-off answer never sampled the end token: do not train on one
            answer_ids.append(tokenizer.eos_token_id)
        rows.append(prompt_ids + answer_ids)
        answer_lens.append(len(answer_ids))
        pads.append(tokenizer.pad_token_id)
    width = max((len(r) for r in rows), default=1)
    ids = torch.tensor(pads, dtype=torch.long)[:, None].repeat(1, width) if rows else torch.zeros(0, 1).long()
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    answer_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for e, (row, n) in enumerate(zip(rows, answer_lens, strict=True)):
        ids[e, width - len(row) :] = torch.tensor(row)
        attn[e, width - len(row) :] = 1
        answer_mask[e, width - n :] = True
    index = torch.tensor(episodes, dtype=torch.long).reshape(-1, 3)
    return EpisodeBatch(
        ids,
        attn,
        answer_mask[:, 1:],
        index[:, 1],
        index[:, 2],
        index[:, 0],
    )


class Policy:
    """The team's models with their adapters, plus one value head per agent when the algorithm needs values."""

    def __init__(self, team: Team, value_heads: bool):
        self.team = team
        self.num_agents = len(team.slots)
        self.value_heads: nn.ModuleList | None = None
        if value_heads:
            # Zero-initialised: values start at 0, the first updates are plain policy-gradient steps.
            sizes = [team.models[s.model_key].config.get_text_config().hidden_size for s in team.slots]
            self.value_heads = nn.ModuleList(nn.Linear(h, 1) for h in sizes)
            for head in self.value_heads:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        for m in team.models.values():
            for name, p in m.named_parameters():
                p.requires_grad_("lora_" in name)

    def agent_parameters(self, agent: int) -> list[nn.Parameter]:
        """What an update of `agent` changes: its adapter (shared by all in the 'shared' layout) and value head."""
        slot = self.team.slots[agent]
        model = self.team.models[slot.model_key]
        params = [p for n, p in model.named_parameters() if "lora_" in n and f".{slot.adapter}." in n]
        if self.value_heads is not None:
            params += list(self.value_heads[agent].parameters())
        return params

    def forward(self, batch: EpisodeBatch, with_values: bool, reference: bool = False):
        """Log-probabilities (E, L-1) of each next token under its agent's policy, and values (E, L-1) or None.

        reference=True: under the base with adapters disabled (the KL reference).
        """
        e, width = batch.input_ids.shape
        logprobs = torch.zeros((e, width - 1))
        values = torch.zeros((e, width - 1)) if with_values else None
        for key, model in self.team.models.items():
            rows = [r for r in range(e) if self.team.slots[int(batch.agent[r])].model_key == key]
            if not rows:
                continue
            # Grouped by adapter: each adapter's rows become a slice in the mixed forward (lora_batch.py).
            rows.sort(key=lambda r: self.team.slots[int(batch.agent[r])].adapter or "")
            index = torch.tensor(rows)
            ids, attn = batch.input_ids[index].to(model.device), batch.attention_mask[index].to(model.device)
            # The reference is the base: peft's "__base__" rows skip every adapter. (model.disable_adapter() would
            # do too, but on exit it re-runs set_adapter, which freezes every adapter but the first one.)
            names = ["__base__" if reference else self.team.slots[int(batch.agent[r])].adapter for r in rows]
            out = model(input_ids=ids, attention_mask=attn, adapter_names=names, output_hidden_states=with_values)
            logits = out.logits[:, :-1].float()
            lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
            logprobs = logprobs.index_put((index,), lp.cpu())
            if values is not None and self.value_heads is not None:
                hidden = out.hidden_states[-1][:, :-1].float().cpu()
                agents = batch.agent[index].tolist()  # rows of one model: one hidden size
                weight = torch.stack([self.value_heads[a].weight[0] for a in agents])  # (R, H): each row's own head
                bias = torch.stack([self.value_heads[a].bias[0] for a in agents])
                values = values.index_put((index,), (hidden * weight[:, None, :]).sum(-1) + bias[:, None])
        return logprobs, values
