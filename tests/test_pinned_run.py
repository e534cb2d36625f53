"""A short training run's transcripts, pinned: a speed change that alters what a seed samples fails here.

Pinned on the 2-layer random test model (tests/conftest.py), 2 agents x 2 turns, 2 steps, with the label verifier.
If a change alters sampling on purpose, the new digest goes here and the commit says why.
"""

from __future__ import annotations

import hashlib
import json

from conftest import run_and_capture, tiny_cfg

PINNED = "6db61dd726c37c8a"


def _digest(run_dir) -> str:
    rows = []
    for path in sorted((run_dir / "transcripts").glob("step_*.jsonl")) + [run_dir / "eval_transcripts.jsonl"]:
        for line in path.read_text().splitlines():
            tr = json.loads(line)
            rows.append([[a["token_ids"] for a in turn] for turn in tr["answers"]])
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def test_a_short_runs_transcripts_are_pinned(monkeypatch, tiny_model_dir, tmp_path):
    digests = {}
    for merge in ("always", "never"):
        run_and_capture(monkeypatch, tiny_cfg(tiny_model_dir, f"generation.merge_adapters={merge}"), tmp_path / merge)
        digests[merge] = _digest(tmp_path / merge)
    assert digests["always"] == digests["never"]  # merged decoding samples what the unmerged adapters sample
    assert digests["always"] == PINNED
