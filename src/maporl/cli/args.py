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
    run or checkpoint (`args.checkpoint`).

    A run or checkpoint directory brings its run's settings (agents, turns, task, sampling); flags override them.
    """
    from maporl import checkpoint
    from maporl.generation.registry import build_generator
    from maporl.team import team_config

    run_cfg, ckpt, model_dir = checkpoint.resolve(args.checkpoint) if args.checkpoint else (None, None, None)
    if model_dir:
        args.overrides = [*args.overrides, f"model.name_or_path={model_dir}"]
    cfg = team_config(config_from_args(args, base=run_cfg), run_cfg)
    team = checkpoint.load_team(cfg, ckpt) if ckpt else None
    return cfg, build_generator(cfg, team)
