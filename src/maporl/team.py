"""Assemble a team of agents (models, tokenizers, adapter slots) and its generator from the config."""

from __future__ import annotations

from maporl.config import Config
from maporl.errors import UsageError
from maporl.generation import BACKENDS, Generator
from maporl.generation.hf import AgentSlot, HFGenerator
from maporl.models import load_base


def build_generator(cfg: Config) -> Generator:
    """The untrained team: every agent is the base model (LoRA adapters start as the identity, so none are needed)."""
    if cfg.generation.backend not in BACKENDS:
        raise UsageError(f"generation.backend={cfg.generation.backend!r} is not available; use one of {BACKENDS}")
    model, tokenizer = load_base(cfg.model.name_or_path, cfg.model.dtype, cfg.model.device)
    slots = [AgentSlot("base") for _ in range(cfg.discussion.num_agents)]
    return HFGenerator(
        {"base": model},
        {"base": tokenizer},
        slots,
        temperature=cfg.generation.temperature,
        max_new_tokens=cfg.generation.max_new_tokens,
        batch_size=cfg.generation.batch_size,
    )
