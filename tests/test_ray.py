"""backend=ray: one training step with a fixed seed gives the same transcripts and rewards as in-process, and a
loss within 1e-4 (the generator and the verifier run as Ray actors; the driver loop is the same)."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_cfg

from maporl import trainer

pytestmark = pytest.mark.ray


def run(cfg, out):
    out.mkdir(parents=True)
    trainer.train(cfg, out, quiet=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, (out / "transcripts" / "step_000001.jsonl").read_text()


def test_ray_step_matches_in_process(tmp_path, tiny_model_dir):
    ray = pytest.importorskip("ray")
    common = ["train.max_steps=2", "algo.name=ppo", "algo.kl_coef=0.01", "eval.num_problems=2"]
    local_rows, local_tr = run(tiny_cfg(tiny_model_dir, *common), tmp_path / "local")
    try:
        ray_rows, ray_tr = run(tiny_cfg(tiny_model_dir, *common, "backend=ray"), tmp_path / "ray")
    finally:
        ray.shutdown()
    assert ray_tr == local_tr  # same discussions, token for token
    for a, b in zip(local_rows, ray_rows, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if key.startswith("reward/") or key.startswith("train/acc") or key.startswith("incentive/"):
                assert a[key] == b[key], key
            elif key.startswith("loss/") or key.startswith("eval/"):
                assert abs(a[key] - b[key]) < 1e-4, key


def test_ray_missing_is_a_usage_error(monkeypatch, tmp_path, tiny_model_dir):
    import builtins

    from maporl.errors import UsageError

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(UsageError, match="pip install 'maporl\\[ray\\]'"):
        trainer.train(tiny_cfg(tiny_model_dir, "backend=ray"), tmp_path, quiet=True)
