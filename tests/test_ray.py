"""backend=ray: one training step with a fixed seed gives the same transcripts and rewards as in-process, and a
loss within 1e-4 (the generator and the verifier run as Ray actors; the driver loop is the same)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_cfg

from maporl import trainer

pytestmark = pytest.mark.ray


@pytest.fixture(autouse=True)
def one_thread():
    """The rollout actors run ray.cpus_per_actor (1) torch threads; the driver must too for the same kernels, and so
    the same sampled tokens, as in-process."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def _pop_logprobs(text: str) -> tuple[list, list[float]]:
    """(the transcripts without their log-probs, every log-prob in order)."""
    rows, logprobs = [json.loads(line) for line in text.splitlines()], []
    for row in rows:
        for turn in row["answers"]:
            for answer in turn:
                logprobs += answer.pop("logprobs")
    return rows, logprobs


def _adapters(run_dir):
    from safetensors.torch import load_file

    ckpt = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    return {p.name: load_file(p) for p in sorted(ckpt.glob("adapter_*.safetensors"))}


def test_two_rollout_workers_give_the_in_process_run(tmp_path, tiny_model_dir):
    """Discussions sharded over 2 workers (whole discussions each, seeds by global index) give the same transcripts,
    rewards and final adapters as one process; every transcript records the weights of the last update."""
    ray = pytest.importorskip("ray")
    common = ["train.max_steps=2", "train.problems_per_step=3", "eval.num_problems=2"]
    local_rows, local_tr = run(tiny_cfg(tiny_model_dir, *common), tmp_path / "local")
    try:
        ray_rows, ray_tr = run(
            tiny_cfg(tiny_model_dir, *common, "backend=ray", "ray.rollout_workers=2"), tmp_path / "ray"
        )
    finally:
        ray.shutdown()
    # The same tokens and texts; the sampler's log-probs agree to float rounding (a shard is a smaller batch).
    local_lp, ray_lp = _pop_logprobs(local_tr), _pop_logprobs(ray_tr)
    assert ray_lp[0] == local_lp[0]
    assert torch.allclose(torch.tensor(ray_lp[1]), torch.tensor(local_lp[1]), atol=1e-5)
    assert {json.loads(line)["meta"]["weights_version"] for line in ray_tr.splitlines()} == {1}
    step2 = (tmp_path / "ray" / "transcripts" / "step_000002.jsonl").read_text().splitlines()
    assert {json.loads(line)["meta"]["weights_version"] for line in step2} == {2}  # synced after step 1
    for a, b in zip(local_rows, ray_rows, strict=True):
        assert {k: v for k, v in a.items() if not k.startswith("time/")} == {
            k: v for k, v in b.items() if not k.startswith("time/")
        }
    local, remote = _adapters(tmp_path / "local"), _adapters(tmp_path / "ray")
    assert local.keys() == remote.keys() and all(
        torch.equal(local[f][k], remote[f][k]) for f in local for k in local[f]
    )


def test_a_worker_with_stale_weights_stops_the_step(tiny_model_dir):
    ray = pytest.importorskip("ray")
    from maporl.ray_backend import RayRolloutPool
    from maporl.tasks import get_task
    from maporl.team import build_team

    cfg = tiny_cfg(tiny_model_dir, "backend=ray", "ray.rollout_workers=2")
    try:
        pool = RayRolloutPool(cfg)
        pool.sync(build_team(cfg, with_adapters=True))
        problems = get_task(cfg.task.name).sample(4, 0, "train")
        fresh = pool.discuss(problems, cfg.task.name, cfg.discussion, cfg.seed, 0)
        trainer._check_fresh(fresh, pool.weights_version)  # all on version 1
        ray.get(pool.workers[1].load_adapters.remote({}, 0))  # worker 1 misses an update
        stale = pool.discuss(problems, cfg.task.name, cfg.discussion, cfg.seed, 0)
        assert [tr.meta["weights_version"] for tr in stale] == [1, 1, 0, 0]  # its shard: the last two problems
        with pytest.raises(RuntimeError, match=r"weights version\(s\) \[0\], expected 1"):
            trainer._check_fresh(stale, pool.weights_version)
    finally:
        ray.shutdown()


def test_a_cluster_short_of_resources_is_a_one_line_error(tiny_model_dir):
    ray = pytest.importorskip("ray")
    from maporl.errors import UsageError
    from maporl.ray_backend import RayRolloutPool

    cfg = tiny_cfg(tiny_model_dir, "backend=ray", "ray.rollout_workers=64", "ray.start_timeout_s=3")
    try:
        with pytest.raises(UsageError, match="cannot place 64 rollout worker") as e:
            RayRolloutPool(cfg)
        assert "\n" not in str(e.value) and "ray.rollout_workers" in str(e.value)
    finally:
        ray.shutdown()
