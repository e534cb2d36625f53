"""backend=ray faults: a rollout worker or learner SIGKILLed mid-step is restarted and the step redone, and the run
ends bit for bit as the uninterrupted one; lost twice in a step, the run stops with a checkpoint and --resume
continues exactly (MAPORL_KILL_AT / MAPORL_KILL_ONCE, faults.py)."""

from __future__ import annotations

import pytest
from conftest import EQUIVALENCE, ON_RAY, assert_same, ray_run, tiny_cfg

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


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
        on_ray = ray_run(tiny_cfg(tiny_model_dir, *EQUIVALENCE, *ON_RAY), tmp_path / "ray")
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
            ray_run(cfg, tmp_path / "ray")
        assert "\n" not in str(e.value) and "--resume" in str(e.value)
    finally:
        ray.shutdown()
    monkeypatch.delenv("MAPORL_KILL_AT")
    try:
        resumed = ray_run(cfg, tmp_path / "ray", resume=True)
    finally:
        ray.shutdown()
    assert_same(in_process, resumed)
