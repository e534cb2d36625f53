"""Verifiers score every answer of every agent at every turn: a (B, N, T) tensor in [0, 1], whichever kind.

- label: the task's ground-truth check (1.0 / 0.0);
- model: a learned verifier directory (`maporl verifier train`), P(correct);
- http: the same served by `maporl verifier serve` (client with timeouts and retries).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def score_transcripts(transcripts: Sequence, task, probabilities: Callable[[list[tuple[str, str]]], list[float]]):
    """(B, N, T) scores from a P(correct | question, response) function, one call for every answer."""
    import torch

    if not transcripts:
        return torch.zeros(0, 0, 0)
    n, t = transcripts[0].num_agents, transcripts[0].num_turns
    render = task.render_question if task is not None else (lambda p: p.question)
    pairs = [(render(tr.problem), tr.answers[k][i].response) for tr in transcripts for i in range(n) for k in range(t)]
    return torch.tensor(probabilities(pairs), dtype=torch.float).reshape(len(transcripts), n, t)


def build_verifier(cfg, task):
    v = cfg.verifier
    if v.kind == "label":
        from maporl.verifiers.label import LabelVerifier

        return LabelVerifier(task)
    if v.kind == "model":
        from maporl.verifiers.model import load_model_verifier

        return load_model_verifier(v.path, task, device=cfg.model.device)
    from maporl.verifiers.server import HTTPVerifier

    return HTTPVerifier(v.url, task, timeout=v.timeout)
