"""Hugging Face Hub names (`org/name`) as models and teams, through the local Hub cache only.

maporl never downloads at run time: a training or evaluation on a cluster must not depend on the network, and a
model that changes on the Hub must not change a run. A name is looked up in the Hub cache (`HF_HUB_CACHE`, by
default ~/.cache/huggingface/hub), where `hf download org/name` puts it. Pushing an export is `serving/hub.py`.
"""

from __future__ import annotations

import re
from pathlib import Path

from maporl.errors import UsageError

# What huggingface_hub accepts as a repo id (its validate_repo_id), restricted to the two-part "org/name" form:
# a bare name is far more likely a mistyped local folder than a Hub model.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def is_repo_id(text: str) -> bool:
    """Whether `text` is a Hub repository name, `org/name`."""
    return bool(_REPO_ID.match(text)) and ".." not in text and not text.endswith(".git")


def is_hub_name(text: str) -> bool:
    """Whether `text` names a Hub repository rather than a local folder: `org/name`, and no such path exists."""
    return is_repo_id(text) and not Path(text).exists()


def cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def cached_snapshot(repo_id: str) -> Path | None:
    """The folder of `repo_id`'s cached snapshot (its main revision), or None when the cache holds none."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, incomplete, malformed: all mean "fetch it", which the caller says
        return None


def not_cached(repo_id: str, what: str) -> str:
    """The one-line error for a Hub name the cache does not hold: what was asked for, and the ways to fix it."""
    return (
        f"{what} {repo_id}: no such local folder, and not in the Hugging Face cache ({cache_dir()}); check the path, "
        f"or fetch it once with `hf download {repo_id}` where there is network (then copy the cache here or set "
        f"HF_HUB_CACHE; or `hf download {repo_id} --local-dir DIR` and pass DIR): maporl never downloads at run time"
    )


def resolve_name(repo_id: str, what: str) -> Path:
    """The cached snapshot folder of `repo_id`, or a UsageError saying how to fetch it."""
    path = cached_snapshot(repo_id)
    if path is None:
        raise UsageError(not_cached(repo_id, what))
    return path
