"""Assemble a team of agents (models, tokenizers, adapter slots) from the config.

Adapter layouts (`discussion.adapters`):
- per_agent: one base model with one LoRA adapter per agent (default; peft batches rows of different adapters);
- shared: one base model with one LoRA adapter that every agent uses (the released MAPoRL code's setting);
- separate: one full model per agent.
Heterogeneous teams (`model.agent_models`, one directory per agent) load each distinct base once, with its own
tokenizer, and give every agent its own adapter on its model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from maporl import lora_batch
from maporl.config import Config
from maporl.errors import UsageError
from maporl.models import load_model, load_tokenizer, resolve_model_dir
from maporl.records import AgentSlot


@dataclass
class Team:
    """Where each agent's policy lives: models by key, their tokenizers, and one slot per agent."""

    models: dict[str, PreTrainedModel]
    tokenizers: dict[str, PreTrainedTokenizerBase]
    slots: list[AgentSlot]

    def tokenizer(self, agent: int) -> PreTrainedTokenizerBase:
        return self.tokenizers[self.slots[agent].model_key]

    def adapters(self) -> list[tuple[str, str]]:
        """Every distinct (model key, adapter name), in agent order (agents may share one)."""
        return list(dict.fromkeys((s.model_key, s.adapter) for s in self.slots if s.adapter is not None))

    def adapter_states(self) -> dict[tuple[str, str], dict[str, torch.Tensor]]:
        """Every distinct adapter's LoRA tensors by (model key, adapter name), detached, contiguous and on the CPU:
        what a checkpoint, a vLLM engine and the rollout workers receive after an update."""
        return {
            (key, name): {
                k: v.detach().contiguous().cpu()
                # Embeddings are never trained here; "auto" would look the base up (on the hub for a hub name)
                for k, v in get_peft_model_state_dict(
                    self.models[key], adapter_name=name, save_embedding_layers=False
                ).items()
            }
            for key, name in self.adapters()
        }

    def load_adapters(self, states: dict[tuple[str, str], dict[str, torch.Tensor]]) -> None:
        """Set adapters from LoRA tensors by (model key, adapter name), as `adapter_states` gives them: the one way
        weights enter a team (checkpoints, learner actors, rollout workers)."""
        for (key, name), state in states.items():
            set_peft_model_state_dict(self.models[key], state, adapter_name=name)

    def untrained(self) -> Team:
        """The same models with every adapter switched off (peft's "__base__" rows): the base team."""
        return Team(self.models, self.tokenizers, [AgentSlot(s.model_key) for s in self.slots])


def lora_config(cfg: Config) -> LoraConfig:
    # Dropout 0: peft's mixed-adapter batches need eval mode, where dropout would be off anyway.
    return LoraConfig(
        r=cfg.algo.lora_rank,
        lora_alpha=cfg.algo.lora_alpha,
        target_modules="all-linear",
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )


def _with_adapters(model: PreTrainedModel, names: list[str], cfg: Config) -> PeftModel:
    peft_model = get_peft_model(model, lora_config(cfg), adapter_name=names[0])
    for name in names[1:]:
        peft_model.add_adapter(name, lora_config(cfg))
    peft_model.eval()
    lora_batch.install(peft_model)
    return peft_model


def build_team(cfg: Config, with_adapters: bool) -> Team:
    """Load the base and lay out agents as cfg.discussion.adapters says.

    `with_adapters=False` is for an untrained team: a freshly initialised LoRA is the identity, so every agent is
    the bare base and generation skips the adapter overhead (1.2-2x on small models).
    """
    n, layout = cfg.discussion.num_agents, cfg.discussion.adapters
    if cfg.model.agent_models:
        return _heterogeneous(cfg, with_adapters)
    path = resolve_model_dir(cfg.model.name_or_path)
    tokenizer = load_tokenizer(path)
    if layout == "separate" and with_adapters:
        # One full copy per agent, each with its own adapter: the reference policy is that copy with it disabled.
        names = [f"agent{i}" for i in range(n)]
        models = {k: _with_adapters(load_model(path, cfg.model.dtype, cfg.model.device), [k], cfg) for k in names}
        return Team(models, dict.fromkeys(models, tokenizer), [AgentSlot(k, k) for k in names])
    return team_of(cfg, load_model(path, cfg.model.dtype, cfg.model.device), tokenizer, with_adapters)


def team_of(cfg: Config, base: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, with_adapters: bool) -> Team:
    """A team over a base model already in memory, with one LoRA per agent or one shared by all
    (`discussion.adapters`): what `build_team` makes of a model directory, for a model built in code (the GPU check's
    random models of real shapes)."""
    n, layout = cfg.discussion.num_agents, cfg.discussion.adapters
    if not with_adapters:  # every agent is the bare base, whatever the layout
        return Team({"base": base}, {"base": tokenizer}, [AgentSlot("base") for _ in range(n)])
    if layout == "separate":
        raise UsageError("team_of lays out one base model: use discussion.adapters=per_agent or shared")
    names = [f"agent{i}" for i in range(n)] if layout == "per_agent" else ["shared"]
    model = _with_adapters(base, names, cfg)
    slots = [AgentSlot("base", names[i] if layout == "per_agent" else "shared") for i in range(n)]
    return Team({"base": model}, {"base": tokenizer}, slots)


# The shared-seat rule. A run trained with one shared adapter is evaluated with it, and an agent trained alone (a run
# of one agent) sits in every seat of a larger team, as one adapter shared by all: `team_config` lays the team out so,
# and `saved_adapter` finds the file that fills the shared slot.


def team_config(cfg: Config, run_cfg: dict | None) -> Config:
    """The config to build a trained run's team with (the shared-seat rule above)."""
    trained = (run_cfg or {}).get("discussion", {})
    alone = trained.get("num_agents") == 1 and cfg.discussion.num_agents > 1
    if alone or (trained.get("adapters") == "shared" and cfg.discussion.adapters == "per_agent"):
        return dataclasses.replace(cfg, discussion=dataclasses.replace(cfg.discussion, adapters="shared"))
    return cfg


def saved_adapter(name: str, saved: list[str]) -> str | None:
    """Which of the `saved` adapter names fills the team's adapter slot `name`: its own, or, for the shared slot of
    a team built by `team_config` from a run of one agent, that agent's one adapter; None when none does."""
    if name in saved:
        return name
    return saved[0] if name == "shared" and len(saved) == 1 else None


def _heterogeneous(cfg: Config, with_adapters: bool) -> Team:
    """Agents name their own base models: one model (and tokenizer) per distinct directory, one adapter per agent."""
    paths = [str(resolve_model_dir(name)) for name in cfg.model.agent_models]
    keys = {path: f"model{k}" for k, path in enumerate(dict.fromkeys(paths))}  # distinct bases, in agent order
    models, tokenizers = {}, {}
    for path, key in keys.items():
        model = load_model(Path(path), cfg.model.dtype, cfg.model.device)
        names = [f"agent{i}" for i, p in enumerate(paths) if p == path]
        models[key] = _with_adapters(model, names, cfg) if with_adapters else model
        tokenizers[key] = load_tokenizer(Path(path))
    slots = [AgentSlot(keys[path], f"agent{i}" if with_adapters else None) for i, path in enumerate(paths)]
    return Team(models, tokenizers, slots)
