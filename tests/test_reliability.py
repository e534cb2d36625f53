"""Reliability: exact resume after SIGKILL at several points, checkpoint verification and retention, NaN guards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import RandomVerifier, answer_batch, lora_state, run_and_capture, tiny_cfg, tiny_overrides
from safetensors.torch import load_file

from maporl import checkpoint, trainer
from maporl.distributed import backend
from maporl.errors import UsageError


def train_args(model_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "maporl.cli",
        "train",
        "--quiet",
        "--out",
        str(out),
        *tiny_overrides(model_dir),
        "train.max_steps=4",
        "train.checkpoint_every=1",
        "train.keep_last=0",
        "algo.name=ppo",  # value heads + KL in the reward: parameters move even when every answer scores the same
        "algo.kl_coef=0.01",
        *extra,
    ]


def run_train(args: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MAPORL_KILL_AT"}
    env["OMP_NUM_THREADS"] = "1"  # determinism and no oversubscription between test processes
    if kill_at:
        env["MAPORL_KILL_AT"] = kill_at
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)


def final_state(run: Path) -> dict[str, torch.Tensor]:
    ckpt = checkpoint.latest(run)
    state = {}
    for f in sorted(ckpt.glob("adapter_*.safetensors")):
        state |= {f"{f.name}/{k}": v for k, v in load_file(f).items()}
    state |= {f"value/{k}": v for k, v in torch.load(ckpt / "value_heads.pt").items()}
    return state


def step_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("reference") / "run"
    r = run_train(train_args(tiny_model_dir, out))
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_at, resumes_from",
    [
        ("generation:2", 1),  # between the discussion turns of step 2
        ("update:3", 2),  # after backward, before the optimizer step of step 3
        ("checkpoint:2", 1),  # half-way through writing the step-2 checkpoint
    ],
)
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny_model_dir, reference_run, kill_at, resumes_from):
    out = tmp_path / "run"
    killed = run_train(train_args(tiny_model_dir, out), kill_at=kill_at)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert int(checkpoint.latest(out).name.split("_")[1]) == resumes_from
    resumed = run_train(train_args(tiny_model_dir, out) + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference, got = final_state(reference_run), final_state(out)
    assert reference.keys() == got.keys()
    assert all(torch.equal(reference[k], got[k]) for k in reference)
    assert step_rows(out) == step_rows(reference_run)  # every step's metrics, no duplicates, none missing
    assert not list((out / "checkpoints").glob(".tmp_*")) or kill_at.startswith("checkpoint")


@pytest.mark.slow
def test_resume_skips_a_damaged_checkpoint(tmp_path, tiny_model_dir, reference_run):
    out = tmp_path / "run"
    assert run_train(train_args(tiny_model_dir, out), kill_at="generation:4").returncode == -9
    newest = checkpoint.latest(out)
    assert newest.name == "step_000003"
    adapter = next(newest.glob("adapter_*.safetensors"))
    adapter.write_bytes(adapter.read_bytes()[:-7])  # a torn write
    resumed = run_train(train_args(tiny_model_dir, out) + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "skipping damaged checkpoint" in resumed.stderr and "step_000003" in resumed.stderr
    reference, got = final_state(reference_run), final_state(out)
    assert all(torch.equal(reference[k], got[k]) for k in reference)
    assert step_rows(out) == step_rows(reference_run)


def test_verify_detects_damage_and_keep_last_prunes(monkeypatch, tmp_path, tiny_model_dir, capsys):
    monkeypatch.setattr(backend, "LabelVerifier", RandomVerifier)
    cfg = tiny_cfg(tiny_model_dir, "train.max_steps=3", "train.checkpoint_every=1", "train.keep_last=2")
    trainer.train(cfg, tmp_path, quiet=True)
    dirs = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert dirs == ["step_000002", "step_000003"]
    newest = tmp_path / "checkpoints" / "step_000003"
    assert checkpoint.verify(newest) is None
    state = newest / "trainer_state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    state.write_bytes(bytes(data))
    assert "trainer_state.pt" in checkpoint.verify(newest)
    assert checkpoint.latest(tmp_path).name == "step_000002"
    assert "skipping damaged checkpoint" in capsys.readouterr().err
    with pytest.raises(UsageError, match="is damaged"):
        checkpoint.resolve(str(newest))
    (tmp_path / "checkpoints" / "step_000002" / "state.json").write_text("{")
    assert checkpoint.latest(tmp_path) is None


def nan_rewards(monkeypatch, agents: tuple[int, ...], from_step: int = 1) -> None:
    """Rewards of `agents` become NaN from the `from_step`-th step on (a broken verifier or reward, say)."""
    real, calls = trainer.step_rewards, []

    def poisoned(*args, **kwargs):
        rewards = real(*args, **kwargs)
        calls.append(1)
        if len(calls) >= from_step:
            rewards.influence[:, list(agents), :] = float("nan")
        return rewards

    monkeypatch.setattr(trainer, "step_rewards", poisoned)


def test_nan_reward_skips_only_that_agent(monkeypatch, tmp_path, tiny_model_dir, capsys):
    nan_rewards(monkeypatch, agents=(1,))
    cfg = tiny_cfg(tiny_model_dir, "algo.max_nonfinite=10")
    result, team, initial = run_and_capture(monkeypatch, cfg, tmp_path)
    after0, after1 = lora_state(team, "agent0"), lora_state(team, "agent1")
    assert all(not torch.equal(initial[n], p) for n, p in after0.items())  # agent 0 trained
    assert all(torch.equal(initial[n], p) for n, p in after1.items())  # agent 1 skipped, not corrupted
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "time/step" in r]
    assert [r["nonfinite/agent1"] for r in steps] == [1.0, 1.0] and [r["nonfinite/agent0"] for r in steps] == [0, 0]
    assert "skipped agent(s) 1" in capsys.readouterr().err
    assert result["steps"] == 2


def test_nan_loss_skips_that_agent(monkeypatch, tiny_model_dir):
    from maporl.learner import Learner
    from maporl.policy import Policy
    from maporl.team import build_team

    cfg = tiny_cfg(tiny_model_dir)
    team = build_team(cfg, with_adapters=True)
    policy = Policy(team, value_heads=False)
    learner = Learner(policy, cfg.algo, [0, 1], 10, 0)
    batch = answer_batch(team, 2)
    real_forward = policy.forward

    def forward(sub, with_values, reference=False):
        logp, values = real_forward(sub, with_values, reference)
        return torch.where((sub.agent == 1)[:, None], torch.full_like(logp, float("nan")), logp), values

    monkeypatch.setattr(policy, "forward", forward)
    before = {a: lora_state(team, f"agent{a}") for a in (0, 1)}
    stats = learner.update(batch)
    after = {a: lora_state(team, f"agent{a}") for a in (0, 1)}
    assert stats["nonfinite/agent1"] == 1.0 and stats["nonfinite/agent0"] == 0.0
    assert any(not torch.equal(before[0][n], after[0][n]) for n in before[0])
    assert all(torch.equal(before[1][n], after[1][n]) for n in before[1])
    assert learner.consecutive_nonfinite == 1
    learner.update(batch)
    assert learner.consecutive_nonfinite == 2


def test_repeated_nonfinite_stops_cleanly_with_a_checkpoint(monkeypatch, tmp_path, tiny_model_dir):
    monkeypatch.setattr(backend, "LabelVerifier", RandomVerifier)
    nan_rewards(monkeypatch, agents=(0, 1), from_step=2)
    cfg = tiny_cfg(tiny_model_dir, "train.max_steps=10", "algo.max_nonfinite=2")
    result = trainer.train(cfg, tmp_path, quiet=True)
    assert result["steps"] == 3  # step 1 fine, steps 2 and 3 non-finite for every agent: stop
    assert checkpoint.latest(tmp_path).name == "step_000003"
    assert (tmp_path / "eval.json").is_file()


def test_learner_restore_puts_weights_optimizer_and_rng_back(tiny_model_dir):
    """Learner.snapshot() before an update and restore() after it: the adapters, every group's optimizer and
    schedule, the minibatch RNG and the non-finite count are what they were, so the redone update is the same."""
    from maporl.learner import Learner
    from maporl.policy import Policy
    from maporl.team import build_team

    cfg = tiny_cfg(tiny_model_dir)
    learner = Learner(Policy(build_team(cfg, with_adapters=True), value_heads=False), cfg.algo, [0, 1], 10, 0)
    params = [p for ps in learner.groups.values() for p in ps]
    before = [p.detach().clone() for p in params]
    snapshot = learner.snapshot()
    for updater in learner.updaters.updaters.values():  # an "update": moved weights, a stepped optimizer
        for p in updater.params:
            p.grad = torch.ones_like(p)
        updater.optimizer.step()
        updater.scheduler.step()
    torch.randperm(5, generator=learner.generator)
    learner.consecutive_nonfinite = 4
    assert not all(torch.equal(a, b) for a, b in zip(before, params, strict=True))
    learner.restore(snapshot)
    assert all(torch.equal(a, b) for a, b in zip(before, params, strict=True))
    assert all(u.optimizer.state == {} and u.scheduler.last_epoch == 0 for u in learner.updaters.updaters.values())
    assert torch.equal(learner.generator.get_state(), snapshot.rng) and learner.consecutive_nonfinite == 0


def test_a_trainer_state_in_another_format_is_one_line_naming_the_file(tmp_path, tiny_model_dir):
    from maporl.learner import Learner
    from maporl.policy import Policy
    from maporl.team import build_team

    cfg = tiny_cfg(tiny_model_dir)
    learner = Learner(Policy(build_team(cfg, with_adapters=True), value_heads=False), cfg.algo, [0, 1], 10, 0)
    torch.save({"optimizer": {}, "scheduler": {}}, tmp_path / "trainer_state.pt")  # one optimizer for every group
    (tmp_path / "state.json").write_text('{"step": 1}')
    with pytest.raises(UsageError, match="trainer_state.pt is not a checkpoint this version of maporl reads"):
        checkpoint.load_trainer_state(tmp_path, learner)
