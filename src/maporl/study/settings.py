"""The settings of `maporl reproduce`: its `reproduce:` section beside the run's sections, in the same YAML files
and dotted overrides (`reproduce.seeds=[0,1,2]`), kept out of the run config a training run saves.

    cfg, study = load_study("tiny", ["reproduce.budget_min=30", "discussion.num_agents=2"])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from maporl.config import Config, load_config, opt, to_dict
from maporl.config_parse import build, config_file, describe, merge_dotted, parse_override, read_yaml
from maporl.errors import UsageError, did_you_mean
from maporl.study.arms import ARMS


@dataclass(frozen=True)
class ReproduceConfig:
    budget_min: float = opt(5.0, "training minutes per trained method (maporl reproduce)")
    transfer_task: str = opt(
        "arith_word_unseen", "the unseen task every method is also evaluated on (forms no training step saw)"
    )
    seeds: tuple[int, ...] = opt((0,), "seeds; each method is trained and evaluated once per seed")
    methods: tuple[str, ...] = opt(
        (),
        "methods to run (empty: the paper's comparison, the first six; the incentive ablations maporl_alpha1_only, "
        "maporl_beta0_only and their *_after_baseline variants and the claim-(b) trials maporl_solo_warmup, "
        "maporl_epochs2, maporl_wide and maporl_shared run when named; all: every one; study/arms.py)",
    )
    solo_warmup_share: float = opt(
        1 / 3,
        "maporl_solo_warmup: share of budget_min in which every agent first answers alone (one turn, its own "
        "adapter, a third of a discussion's cost), before co-training with discussions for the rest",
    )

    def __post_init__(self) -> None:
        for name in self.methods:  # the arms are ARMS' keys, not a Literal: an arm is one entry there
            if name not in ARMS:
                raise UsageError(
                    f"reproduce.methods={name!r} is not allowed{did_you_mean(name, list(ARMS))}; choose one of: "
                    + ", ".join(ARMS)
                )
        checks = [
            (self.budget_min > 0, "reproduce.budget_min must be > 0 minutes, e.g. --budget-min 5"),
            (bool(self.seeds), "reproduce.seeds must name at least one seed, e.g. --seeds 0,1,2"),
            (
                0 < self.solo_warmup_share < 1,
                "reproduce.solo_warmup_share must be between 0 and 1 (the share of budget_min spent answering alone)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)


@dataclass(frozen=True)
class _Sections:
    """The one section a study adds to a run config file: parsed with the run's rules and error messages."""

    reproduce: ReproduceConfig = field(default_factory=ReproduceConfig)


def load_study(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Config, ReproduceConfig]:
    """The run config (defaults <- YAML file <- dotted overrides, as `load_config`) and the `reproduce` section read
    from the same file and overrides."""
    data = read_yaml(config_file(path)) if path else {}
    study = {"reproduce": data.pop("reproduce")} if "reproduce" in data else {}
    run_overrides = []
    for item in overrides:
        key, value = parse_override(item)
        if key[0] == "reproduce":
            merge_dotted(study, key, value)
        else:
            run_overrides.append(item)
    return load_config(None, run_overrides, base=data), build(_Sections, study, "").reproduce


def study_yaml(cfg: Config, study: ReproduceConfig) -> str:
    """A comparison's config.yaml: the run's sections, then its `reproduce` section."""
    data: dict[str, Any] = {**to_dict(cfg), "reproduce": dataclasses.asdict(study)}
    return yaml.safe_dump(data, sort_keys=False)


def study_keys() -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) of the `reproduce` section, for `maporl config --keys`."""
    return describe(ReproduceConfig, "reproduce.")
