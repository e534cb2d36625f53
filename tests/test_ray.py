"""backend=ray: rollout workers, one learner actor per adapter and the verifier as Ray actors give bit for bit the
in-process run (the driver loop is the same); lost actors are restarted and the step redone; placement and stale
weights are one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_cfg

from maporl import trainer
from maporl.config import with_overrides

pytestmark = pytest.mark.ray


@pytest.fixture(autouse=True)
def one_thread():
    """The rollout actors run ray.cpus_per_actor (1) torch threads; the driver must too for the same kernels, and so
    the same sampled tokens, as in-process."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# 3 agents (3 learner actors), 2 rollout workers, 3 steps; PPO with a KL term, so value heads train and weights move
# even where every answer scores the same. Generation one row at a time: a worker's shard is then generated in the
# same batches as in-process, and the sampler's log-probs too are bit for bit the same.
EQUIVALENCE = [
    "discussion.num_agents=3",
    "train.max_steps=3",
    "train.problems_per_step=3",
    "train.checkpoint_every=1",
    "algo.name=ppo",
    "algo.kl_coef=0.01",
    "generation.batch_size=1",
]
ON_RAY = ["backend=ray", "ray.rollout_workers=2", "ray.cpus_per_actor=0.25"]  # 5 actors on 2 CPUs


def run(cfg, out, resume=False):
    out.mkdir(parents=True, exist_ok=True)
    trainer.train(cfg, out, resume=resume, quiet=True)
    return outputs(out)


def outputs(out) -> dict:
    """What must not depend on the backend: metrics (times aside), every step's transcripts, the final weights."""
    from safetensors.torch import load_file

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ckpt = sorted((out / "checkpoints").glob("step_*"))[-1]
    return {
        "metrics": [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows],
        "transcripts": {p.name: p.read_text() for p in sorted((out / "transcripts").glob("*.jsonl"))},
        "adapters": {p.name: load_file(p) for p in sorted(ckpt.glob("adapter_*.safetensors"))},
        "value_heads": torch.load(ckpt / "value_heads.pt") if (ckpt / "value_heads.pt").is_file() else {},
        "step": ckpt.name,
    }


def assert_same(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    assert a["transcripts"] == b["transcripts"]  # token ids, log-probs, weights versions
    assert a["metrics"] == b["metrics"]  # rewards, accuracies, losses, gradient norms: equal, not close
    for part in ("adapters", "value_heads"):
        assert a[part].keys() == b[part].keys()
    for f in a["adapters"]:
        assert a["adapters"][f].keys() == b["adapters"][f].keys()
        assert all(torch.equal(a["adapters"][f][k], b["adapters"][f][k]) for k in a["adapters"][f])
    assert all(torch.equal(a["value_heads"][k], b["value_heads"][k]) for k in a["value_heads"])


@pytest.fixture(scope="module")
def in_process(tiny_model_dir, tmp_path_factory):
    """The in-process run every Ray run below must reproduce bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(tiny_cfg(tiny_model_dir, *EQUIVALENCE), tmp_path_factory.mktemp("local"))
    finally:
        torch.set_num_threads(before)


def test_two_workers_and_three_learners_give_the_in_process_run(tmp_path, tiny_model_dir, in_process):
    """Discussions sharded over 2 rollout workers (whole discussions, seeds by global index) and one learner actor
    per agent give the same transcripts, rewards, metrics and final adapters and value heads as one process."""
    ray = pytest.importorskip("ray")
    try:
        on_ray = run(tiny_cfg(tiny_model_dir, *EQUIVALENCE, *ON_RAY), tmp_path / "ray")
    finally:
        ray.shutdown()
    assert_same(in_process, on_ray)
    versions = [{json.loads(line)["meta"]["weights_version"] for line in text.splitlines()} for text in
                in_process["transcripts"].values()]  # fmt: skip
    assert versions == [{1}, {2}, {3}]  # every step sampled with the weights of the update before it
    assert any(v.abs().sum() > 0 for f in on_ray["adapters"].values() for k, v in f.items() if "lora_B" in k)


def test_a_shared_adapter_has_one_learner_and_gives_the_in_process_run(tmp_path, tiny_model_dir):
    ray = pytest.importorskip("ray")
    common = ["discussion.adapters=shared", "algo.kl_coef=0.01", "train.checkpoint_every=1", "generation.batch_size=1"]
    local = run(tiny_cfg(tiny_model_dir, *common), tmp_path / "local")
    try:
        on_ray = run(tiny_cfg(tiny_model_dir, *common, "backend=ray", "ray.cpus_per_actor=0.5"), tmp_path / "ray")
    finally:
        ray.shutdown()
    assert_same(local, on_ray)
    assert list(on_ray["adapters"]) == ["adapter_shared.safetensors"]


@pytest.mark.parametrize("point", ["generation", "update"])
def test_an_actor_killed_mid_step_is_restarted_and_the_step_redone(
    monkeypatch, tmp_path, tiny_model_dir, in_process, point, capsys
):
    """SIGKILL a rollout worker between discussion turns, or a learner between backward and optimizer step, in step
    2: the actor is restarted, every learner rolled back, the step redone; the run ends as if nothing happened."""
    ray = pytest.importorskip("ray")
    # Set before Ray starts, so every actor inherits it; step 2's points run in the actors only (the driver's final
    # evaluation runs at step 3).
    monkeypatch.setenv("MAPORL_KILL_AT", f"{point}:2")
    monkeypatch.setenv("MAPORL_KILL_ONCE", str(tmp_path / "killed"))
    try:
        on_ray = run(tiny_cfg(tiny_model_dir, *EQUIVALENCE, *ON_RAY), tmp_path / "ray")
    finally:
        ray.shutdown()
    assert (tmp_path / "killed").exists()  # an actor did die
    role = "rollout worker" if point == "generation" else "learner"
    assert f"a Ray {role} actor died" in capsys.readouterr().err
    assert_same(in_process, on_ray)


def test_an_actor_lost_twice_stops_with_a_checkpoint_and_resume_continues_exactly(
    monkeypatch, tmp_path, tiny_model_dir, in_process
):
    ray = pytest.importorskip("ray")
    from maporl.errors import UsageError

    cfg = tiny_cfg(tiny_model_dir, *EQUIVALENCE, *ON_RAY)
    monkeypatch.setenv("MAPORL_KILL_AT", "update:2")  # every learner dies there, the restarted ones too
    try:
        with pytest.raises(UsageError, match="again in step 2; stopped with checkpoint .*step_000001") as e:
            run(cfg, tmp_path / "ray")
        assert "\n" not in str(e.value) and "--resume" in str(e.value)
    finally:
        ray.shutdown()
    monkeypatch.delenv("MAPORL_KILL_AT")
    try:
        resumed = run(cfg, tmp_path / "ray", resume=True)
    finally:
        ray.shutdown()
    assert_same(in_process, resumed)


def test_async_rollouts_sample_one_update_behind_and_correct_for_it(tmp_path, tiny_model_dir):
    """train.async_rollout: step k+1's discussions start before step k's update, so they carry the weights version
    before it; the update's ratio is taken against the sampler's log-probs (1 on step 1, off 1 once behind)."""
    ray = pytest.importorskip("ray")
    try:
        run(tiny_cfg(tiny_model_dir, *EQUIVALENCE, *ON_RAY, "train.async_rollout=true"), tmp_path / "ray")
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


@pytest.mark.parametrize("joined", [False, True])
def test_a_cluster_short_of_resources_is_a_one_line_error(tiny_model_dir, joined):
    """At once on a cluster of this machine alone; after ray.start_timeout_s on a joined one (it may grow)."""
    ray = pytest.importorskip("ray")
    from maporl.errors import UsageError
    from maporl.ray_backend import RayRolloutPool

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
    from maporl import ray_backend

    made = []
    real = ray_backend.placement_group

    def capture(cfg, learners):
        made.append(real(cfg, learners))
        return made[-1]

    monkeypatch.setattr(ray_backend, "placement_group", capture)
    monkeypatch.setattr("maporl.ray_learners.placement_group", capture)
    return made


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
