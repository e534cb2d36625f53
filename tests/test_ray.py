"""backend=ray: rollout workers, one learner actor per adapter and the verifier as Ray actors give bit for bit the
in-process run (the driver loop is the same); asynchronous rollouts; placement, GPU requests, two nodes; stale weights
and short clusters are one-line errors. Lost actors: test_ray_faults.py."""

from __future__ import annotations

import json

import pytest
from conftest import EQUIVALENCE, ON_RAY, assert_same, ray_run, tiny_cfg

from maporl import trainer
from maporl.config import with_overrides

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("one_thread")]


@pytest.mark.slow
def test_two_workers_and_three_learners_give_the_in_process_run(tmp_path, tiny_model_dir, in_process):
    """Discussions sharded over 2 rollout workers (whole discussions, seeds by global index) and one learner actor
    per agent give the same transcripts, rewards, metrics and final adapters and value heads as one process."""
    ray = pytest.importorskip("ray")
    try:
        on_ray = ray_run(tiny_cfg(tiny_model_dir, *EQUIVALENCE, *ON_RAY), tmp_path / "ray")
    finally:
        ray.shutdown()
    assert_same(in_process, on_ray)
    versions = [{json.loads(line)["meta"]["weights_version"] for line in text.splitlines()} for text in
                in_process["transcripts"].values()]  # fmt: skip
    assert versions == [{1}, {2}, {3}]  # every step sampled with the weights of the update before it
    assert any(v.abs().sum() > 0 for f in on_ray["adapters"].values() for k, v in f.items() if "lora_B" in k)


@pytest.mark.slow
def test_a_shared_adapter_has_one_learner_and_gives_the_in_process_run(tmp_path, tiny_model_dir):
    ray = pytest.importorskip("ray")
    common = ["discussion.adapters=shared", "algo.kl_coef=0.01", "train.checkpoint_every=1", "generation.batch_size=1"]
    local = ray_run(tiny_cfg(tiny_model_dir, *common), tmp_path / "local")
    try:
        on_ray = ray_run(tiny_cfg(tiny_model_dir, *common, "backend=ray", "ray.cpus_per_actor=0.5"), tmp_path / "ray")
    finally:
        ray.shutdown()
    assert_same(local, on_ray)
    assert list(on_ray["adapters"]) == ["adapter_shared.safetensors"]


@pytest.mark.slow
def test_async_rollouts_sample_one_update_behind_and_correct_for_it(tmp_path, tiny_model_dir):
    """train.async_rollout: step k+1's discussions start before step k's update, so they carry the weights version
    before it; the update's ratio is taken against the sampler's log-probs (1 on step 1, off 1 once behind)."""
    ray = pytest.importorskip("ray")
    try:
        ray_run(tiny_cfg(tiny_model_dir, *EQUIVALENCE, *ON_RAY, "train.async_rollout=true"), tmp_path / "ray")
    finally:
        ray.shutdown()
    steps = sorted((tmp_path / "ray" / "transcripts").glob("step_*.jsonl"))
    versions = [{json.loads(line)["meta"]["weights_version"] for line in p.read_text().splitlines()} for p in steps]
    assert versions == [{1}, {1}, {2}]  # step 1 synchronous; steps 2 and 3 one update behind
    rows = [json.loads(line) for line in (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()]
    ratios = [row["ratio_mean"] for row in rows if "ratio_mean" in row]
    assert ratios[0] == pytest.approx(1.0, abs=1e-4) and abs(ratios[1] - 1.0) > 1e-5


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


@pytest.mark.slow
def test_a_worker_with_stale_weights_stops_the_step(tiny_model_dir):
    ray = pytest.importorskip("ray")
    from maporl.distributed.actors import RayRolloutPool
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


@pytest.mark.parametrize("joined", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_cluster_short_of_resources_is_a_one_line_error(tiny_model_dir, joined):
    """At once on a cluster of this machine alone; after ray.start_timeout_s on a joined one (it may grow)."""
    ray = pytest.importorskip("ray")
    from maporl.distributed.actors import RayRolloutPool
    from maporl.errors import UsageError

    address = []
    if joined:
        ray.init(include_dashboard=False, log_to_driver=False)
        address = [f"ray.address={ray.get_runtime_context().gcs_address}"]
    cfg = tiny_cfg(tiny_model_dir, "backend=ray", "ray.rollout_workers=64", "ray.start_timeout_s=3", *address)
    try:
        with pytest.raises(UsageError, match="cannot place 64 rollout worker") as e:
            RayRolloutPool(cfg)
        assert "\n" not in str(e.value) and "ray.rollout_workers" in str(e.value)
    finally:
        ray.shutdown()


@pytest.fixture
def groups(monkeypatch) -> list:
    """Every placement group the run makes, to inspect where its bundles went and what they asked for."""
    from maporl.distributed import actors as ray_backend

    made = []
    real = ray_backend.placement_group

    def capture(cfg, learners):
        made.append(real(cfg, learners))
        return made[-1]

    monkeypatch.setattr(ray_backend, "placement_group", capture)
    monkeypatch.setattr("maporl.distributed.learners.placement_group", capture)
    return made


@pytest.mark.slow
def test_two_nodes_share_the_actors_and_the_run_completes(tmp_path, tiny_model_dir, groups):
    """docs/scaling.md's two-node recipe, with the second node simulated on this machine: a head and a worker node
    of 1 CPU each, joined by `ray.address`; the run's 2 workers and 2 learners (0.5 CPU each) need both nodes."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster
    from ray.util import placement_group_table

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        cfg = tiny_cfg(tiny_model_dir, "backend=ray", f"ray.address={cluster.address}", "ray.rollout_workers=2",
                       "ray.cpus_per_actor=0.5")  # fmt: skip
        trainer.train(cfg, tmp_path, quiet=True)
        nodes = set(placement_group_table(groups[0])["bundles_to_node_id"].values())
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len(nodes) == 2
    assert (tmp_path / "eval.json").is_file()


@pytest.mark.slow
def test_gpu_requests_reach_the_placement_group(tmp_path, tiny_model_dir, groups):
    """GPU placement without a GPU: a local cluster that declares 2 GPUs; every rollout worker and learner bundle
    asks for its ray.gpus_per_* (the models stay on model.device=cpu), and a GPU short is a one-line error."""
    ray = pytest.importorskip("ray")
    from ray.util import placement_group_table

    from maporl.errors import UsageError

    gpus = ["ray.rollout_workers=2", "ray.gpus_per_rollout_worker=0.5", "ray.gpus_per_learner=0.5"]
    cfg = tiny_cfg(tiny_model_dir, "backend=ray", "ray.cpus_per_actor=0.4", "train.max_steps=1", *gpus)
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        trainer.train(cfg, tmp_path / "run", quiet=True)
        bundles = placement_group_table(groups[0])["bundles"]
        short = r"2 learner\(s\) \(one per trained adapter\) of \{'CPU': 0.4, 'GPU': 1.0\}"
        with pytest.raises(UsageError, match=short):
            trainer.train(with_overrides(cfg, ["ray.gpus_per_learner=1.0"]), tmp_path / "short", quiet=True)
    finally:
        ray.shutdown()
    assert [b.get("GPU") for b in bundles.values()] == [0.5] * 4  # 2 workers, 2 learners (2 agents)
