"""Verifiers score every answer of every agent at every turn: a (B, N, T) tensor in [0, 1], whichever kind.

- label: the task's ground-truth check (1.0 / 0.0), `label.LabelVerifier`;
- model: a learned verifier directory (`maporl verifier train`), P(correct): `generative.GenerativeVerifier` (solves,
  then judges) or `classifier.ClassifierVerifier` (a last-token head), whichever the directory holds;
- http: the same served by `maporl verifier serve`, through `client.HTTPVerifier` (timeouts and retries).
"""

from __future__ import annotations

from pathlib import Path


def load_learned_verifier(path: str | Path, task=None, device: str = "cpu"):
    """The verifier a `maporl verifier train` directory holds: generative (maporl_verifier.json) or classifier."""
    from maporl.verifiers.classifier import ClassifierVerifier
    from maporl.verifiers.generative import META_FILE, GenerativeVerifier

    path = Path(path).expanduser()
    if (path / META_FILE).is_file():
        return GenerativeVerifier(path, task, device)
    return ClassifierVerifier(path, task, device)


def build_verifier(cfg, task):
    """The verifier `cfg.verifier.kind` names, scoring the answers to `task`'s questions."""
    v = cfg.verifier
    if v.kind == "label":
        from maporl.verifiers.label import LabelVerifier

        return LabelVerifier(task)
    if v.kind == "model":
        return load_learned_verifier(v.path, task, device=cfg.model.device)
    from maporl.verifiers.client import HTTPVerifier

    return HTTPVerifier(v.url, task, timeout=v.timeout)
