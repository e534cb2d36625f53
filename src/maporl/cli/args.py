"""What the `maporl` subcommands share: turning flags into config overrides, and the team a `--checkpoint` names."""

from __future__ import annotations

import argparse

from maporl.config import Config, load_config

# Flags that are shortcuts for config keys (an attribute absent from a subcommand's parser is skipped).
FLAG_KEYS = {
    "seed": "seed",
    "eval_seed": "eval.seed",
    "num_agents": "discussion.num_agents",
    "turns": "discussion.turns",
    "task": "task.name",
    "problems": "eval.num_problems",
    "max_steps": "train.max_steps",
    "minutes": "train.minutes",
}


def overrides_from_args(args: argparse.Namespace, flag_keys: dict[str, str] | None = None) -> list[str]:
    """The dotted overrides typed on the command line, then those its flags stand for (`FLAG_KEYS`, or the
    subcommand's own table): a flag wins over the override it shortens."""
    overrides = list(getattr(args, "overrides", []))
    for attr, key in (flag_keys or FLAG_KEYS).items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    return overrides


def config_from_args(args: argparse.Namespace, base: dict | None = None, flag_keys: dict | None = None) -> Config:
    """Defaults <- `base` <- --config file <- overrides <- flags (`FLAG_KEYS`, or the subcommand's own table)."""
    return load_config(getattr(args, "config", None), overrides_from_args(args, flag_keys), base=base)


def team_config_and_generator(args: argparse.Namespace):
    """Config and generator for discuss / eval / verifier gen-data: the shipped base, a model directory, or a trained
    run or checkpoint (`args.checkpoint`), whose run's settings (agents, turns, task, sampling) flags override."""
    from maporl.api import load_team

    return load_team(args.checkpoint, getattr(args, "config", None), overrides_from_args(args))
