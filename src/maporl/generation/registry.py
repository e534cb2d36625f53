"""Generation backends by name (`generation.backend`); the discussion code never changes."""

from __future__ import annotations

from collections.abc import Callable

from maporl.config import Config
from maporl.errors import UsageError, did_you_mean
from maporl.generation import Generator
from maporl.team import Team, build_team


def hf_generator(cfg: Config, team: Team) -> Generator:
    from maporl.generation.hf import HFGenerator

    g = cfg.generation
    return HFGenerator(
        team.models, team.tokenizers, team.slots, g.temperature, g.max_new_tokens, g.batch_size, g.merge_adapters
    )


def vllm_generator(cfg: Config, team: Team) -> Generator:
    from maporl.generation.vllm import VLLMGenerator

    return VLLMGenerator(cfg, team)


GENERATORS: dict[str, Callable[[Config, Team], Generator]] = {"hf": hf_generator, "vllm": vllm_generator}


def build_generator(cfg: Config, team: Team | None = None) -> Generator:
    """The `generation.backend` generator over `team` (default: the untrained team, every agent the bare base)."""
    if cfg.generation.backend not in GENERATORS:
        hint = did_you_mean(cfg.generation.backend, list(GENERATORS))
        raise UsageError(
            f"generation.backend={cfg.generation.backend!r} is unknown{hint}; use one of {list(GENERATORS)}"
        )
    return GENERATORS[cfg.generation.backend](cfg, team or build_team(cfg, with_adapters=False))
