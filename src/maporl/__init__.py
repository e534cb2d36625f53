"""maporl: multi-agent post-co-training of language models with reinforcement learning (MAPoRL).

    from maporl import load_config, train, evaluate, discuss, compare

The names below are imported on first use, so `import maporl` stays light (torch loads with the first of them).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS = {
    "Config": ("maporl.config", "Config"),
    "load_config": ("maporl.config", "load_config"),
    "train": ("maporl.trainer", "train"),
    "evaluate": ("maporl.api", "evaluate"),
    "discuss": ("maporl.api", "discuss"),
    "load_team": ("maporl.api", "load_team"),
    "compare": ("maporl.study.compare", "compare_runs"),
    "Team": ("maporl.team", "Team"),
    "build_team": ("maporl.team", "build_team"),
    "Transcript": ("maporl.records", "Transcript"),
}

__all__ = [
    "Config",
    "Team",
    "Transcript",
    "__version__",
    "build_team",
    "compare",
    "discuss",
    "evaluate",
    "load_config",
    "load_team",
    "train",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'maporl' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
