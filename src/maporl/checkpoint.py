"""Checkpoints: every agent's adapter and value head, the optimizer, scheduler and RNG states, written atomically.

A checkpoint directory is written under a temporary name, fsynced, then renamed; its state.json lists every file
with its size and sha256, so a truncated or damaged checkpoint is detected and the previous good one is used (with a
warning). `checkpoints/latest` names the newest one; only `keep_last` are kept. `resolve` turns whatever a user
passes to --checkpoint into (run config, checkpoint, model).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from maporl import faults
from maporl.config import read_yaml
from maporl.errors import UsageError
from maporl.models import hub
from maporl.policy import Policy
from maporl.team import build_team, saved_adapter


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: Path, step: int, policy: Policy, learner, extra: dict, keep_last: int = 0) -> Path:
    root = run_dir / "checkpoints"
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for (_, name), state in policy.team.adapter_states().items():
        save_file(state, tmp / f"adapter_{name}.safetensors")
    faults.point("checkpoint")
    if policy.value_heads is not None:
        torch.save(policy.value_heads.state_dict(), tmp / "value_heads.pt")
    torch.save(
        {
            **learner.state_dict(),
            "python_rng": random.getstate(),
            "numpy_rng": np.random.get_state(),
            "torch_rng": torch.get_rng_state(),
        },
        tmp / "trainer_state.pt",
    )
    files = {f.name: {"bytes": f.stat().st_size, "sha256": _sha256(f)} for f in sorted(tmp.iterdir())}
    (tmp / "state.json").write_text(json.dumps({"step": step, **extra, "files": files}, indent=2) + "\n")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    (root / "latest.tmp").write_text(final.name + "\n")
    os.replace(root / "latest.tmp", root / "latest")
    _fsync_dir(root)
    if keep_last > 0:
        for old in _step_dirs(run_dir)[keep_last:]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def verify(ckpt: Path) -> str | None:
    """None when every file listed in state.json is present with its size and hash, else what is wrong."""
    try:
        state = json.loads((ckpt / "state.json").read_text())
        files = dict(state["files"])
        int(state["step"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "state.json is missing, unreadable or lists no files"
    for name, meta in files.items():
        f = ckpt / name
        if not f.is_file() or f.stat().st_size != meta["bytes"] or _sha256(f) != meta["sha256"]:
            return f"{name} is missing or damaged"
    return None


def _step_dirs(run_dir: Path) -> list[Path]:
    """Complete-looking checkpoint directories, newest first (temporary ones never match)."""
    root = run_dir / "checkpoints"
    return sorted(root.glob("step_*"), reverse=True) if root.is_dir() else []


def adapter_files(ckpt: Path) -> dict[str, Path]:
    """Every adapter a checkpoint holds, its file by adapter name; an export (`maporl export`) names its own."""
    if (ckpt / "team.json").is_file():
        from maporl.serving.layout import adapter_files as export_adapter_files

        return export_adapter_files(ckpt)
    return {
        f.name.removeprefix("adapter_").removesuffix(".safetensors"): f for f in ckpt.glob("adapter_*.safetensors")
    }


def load_policy(ckpt: Path, policy: Policy) -> None:
    """Load a checkpoint's (or an export's) adapters (and value heads) into a team built with the run's config; the
    shared slot of a team built from a run of one agent gets that agent's adapter (`team.saved_adapter`)."""
    files = adapter_files(ckpt)
    saved = sorted(files)
    adapters = {}
    for key, name in policy.team.adapters():
        source = saved_adapter(name, saved)
        if source is None:
            raise UsageError(f"checkpoint {ckpt} has no adapter '{name}'; use the run's discussion.adapters layout")
        adapters[(key, name)] = load_file(files[source])
    policy.team.load_adapters(adapters)
    if policy.value_heads is not None and (ckpt / "value_heads.pt").is_file():
        policy.value_heads.load_state_dict(torch.load(ckpt / "value_heads.pt", map_location=policy.device))


def load_team(cfg, ckpt: Path):
    """A team built with `cfg` carrying the adapters saved in `ckpt` (for discuss / eval)."""
    team = build_team(cfg, with_adapters=True)
    load_policy(ckpt, Policy(team, value_heads=False))
    return team


def load_trainer_state(ckpt: Path, learner) -> int:
    path = ckpt / "trainer_state.pt"
    state = torch.load(path, weights_only=False)
    if not {"groups", "learner_rng", "consecutive_nonfinite", "python_rng"} <= set(state):
        raise UsageError(
            f"{path} is not a checkpoint this version of maporl reads; start from its weights with train.init_from"
        )
    learner.load_state_dict(state)
    random.setstate(state["python_rng"])
    np.random.set_state(state["numpy_rng"])
    torch.set_rng_state(state["torch_rng"])
    return json.loads((ckpt / "state.json").read_text())["step"]


def latest(run_dir: Path) -> Path | None:
    """The newest checkpoint that verifies; damaged newer ones are skipped with a warning on stderr."""
    for ckpt in _step_dirs(run_dir):
        problem = verify(ckpt)
        if problem is None:
            return ckpt
        print(f"maporl: warning: skipping damaged checkpoint {ckpt} ({problem}); trying an older one", file=sys.stderr)
    return None


def resolve(path: str) -> tuple[dict | None, Path | None, str | None]:
    """--checkpoint PATH -> (run config dict, checkpoint dir, model dir).

    PATH may be a run directory (its latest checkpoint), a checkpoint directory, an export (`maporl export`), a
    Hugging Face model directory, or a Hub name (org/name) of an export or a model in the local Hub cache.
    """
    p = Path(path).expanduser()
    if hub.is_hub_name(path):
        p = hub.resolve_name(path, "--checkpoint")
    if (p / "team.json").is_file():
        from maporl.serving.layout import read_export

        return read_export(p)
    if (p / "state.json").is_file():
        if problem := verify(p):
            raise UsageError(f"checkpoint {p} is damaged ({problem}); pass its run directory to use an older one")
        return read_yaml(p.parent.parent / "config.yaml"), p, None
    if (p / "config.yaml").is_file() and (p / "checkpoints").is_dir():
        ckpt = latest(p)
        if ckpt is None:
            raise UsageError(f"run {p} has no complete checkpoint yet; train longer or pass a checkpoint directory")
        return read_yaml(p / "config.yaml"), ckpt, None
    if (p / "config.json").is_file():
        return None, None, str(p)
    raise UsageError(
        f"--checkpoint {p}: not a run directory, a checkpoint directory, an export or a Hugging Face model directory; "
        "pass e.g. runs/tiny"
    )
