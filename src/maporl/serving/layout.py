"""The export folder's format (`maporl export` writes it, serving/export.py): its names, and reading it back for
`--checkpoint OUT` (`checkpoint.resolve` and `checkpoint.adapter_files` use these; nothing here imports them)."""

from __future__ import annotations

import json
from pathlib import Path

from maporl.errors import UsageError

TEAM_FILE = "team.json"
FORMAT, FORMAT_VERSION = "maporl-team", 1
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's SAFETENSORS_WEIGHTS_NAME
QUESTION = "{question}"


def folder_of(agent: int) -> str:
    return f"agent_{agent}"


def read_team(path: Path) -> dict:
    """An export's team.json, checked: a one-line error names a file this version does not read."""
    try:
        team = json.loads((path / TEAM_FILE).read_text())
        ok = team["format"] == FORMAT and team["kind"] in ("adapters", "merged") and len(team["agents"]) >= 1
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok or team["format_version"] != FORMAT_VERSION:
        raise UsageError(f"{path / TEAM_FILE} is not a maporl export this version reads; export the run again")
    return team


def adapter_files(path: Path) -> dict[str, Path]:
    """An adapter export's adapter files by adapter name (agents of a shared adapter all name one of them)."""
    files: dict[str, Path] = {}
    for agent in read_team(path)["agents"]:
        files.setdefault(agent["adapter"], path / agent["folder"] / ADAPTER_WEIGHTS)
    return files


def read_export(path: Path) -> tuple[dict, Path | None, None]:
    """--checkpoint OUT -> (run config, checkpoint, model dir), as `checkpoint.resolve` returns them: an adapter
    export is its own checkpoint; a merged one is a heterogeneous team of its agents' folders, with no adapters."""
    from maporl.config import read_yaml

    team, cfg = read_team(path), read_yaml(path / "config.yaml")
    if team["kind"] == "adapters":
        return cfg, path, None
    folders = [str((path / agent["folder"]).resolve()) for agent in team["agents"]]
    cfg["model"] = {**cfg.get("model", {}), "name_or_path": folders[0], "agent_models": folders}
    cfg["discussion"] = {**cfg.get("discussion", {}), "adapters": "per_agent"}  # what agent_models asks for
    return cfg, None, None
