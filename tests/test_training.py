"""Co-training on a random ~1M model: what changes, what stays frozen, determinism, accumulation, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import RandomVerifier, answer_batch, lora_state, metric_rows, run_and_capture, tiny_cfg

from maporl import discussion, trainer
from maporl.checkpoint import load_team
from maporl.distributed import backend
from maporl.policy import Policy
from maporl.tasks import get_task
from maporl.team import build_team


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_trained_agents_change_and_frozen_agents_do_not(monkeypatch, tmp_path, tiny_model_dir, algo):
    cfg = tiny_cfg(tiny_model_dir, f"algo.name={algo}", "train.agents=[0]")
    result, team, initial = run_and_capture(monkeypatch, cfg, tmp_path)
    before0 = {n: p for n, p in initial.items() if ".agent0." in n}
    before1 = {n: p for n, p in initial.items() if ".agent1." in n}
    after0, after1 = lora_state(team, "agent0"), lora_state(team, "agent1")
    assert before0 and before0.keys() == after0.keys()
    unchanged = [n for n in before0 if torch.equal(before0[n], after0[n])]
    assert unchanged == []  # every LoRA tensor (A and B) of the trained agent moved in 2 steps
    assert all(torch.equal(before1[n], after1[n]) for n in before1)  # the frozen agent did not
    assert result["steps"] == 2 and (tmp_path / "eval.json").is_file()


def test_all_agents_train_by_default(monkeypatch, tmp_path, tiny_model_dir):
    _, team, initial = run_and_capture(monkeypatch, tiny_cfg(tiny_model_dir), tmp_path)
    for agent in ("agent0", "agent1"):
        after = lora_state(team, agent)
        assert after and all(not torch.equal(initial[n], p) for n, p in after.items())


def test_same_seed_same_metrics(monkeypatch, tmp_path, tiny_model_dir):
    rows = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        out.mkdir()
        run_and_capture(monkeypatch, tiny_cfg(tiny_model_dir), out)
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        rows.append([{key: v for key, v in r.items() if not key.startswith("time/")} for r in lines])
        assert (out / "transcripts" / "step_000001.jsonl").is_file()
    assert rows[0] == rows[1]


def test_gradient_accumulation_matches_one_big_batch(monkeypatch, tmp_path, tiny_model_dir):
    params = []
    for micro in (64, 3):
        cfg = tiny_cfg(tiny_model_dir, f"algo.micro_batch_size={micro}", "train.max_steps=1", "algo.kl_coef=0.01")
        out = tmp_path / f"m{micro}"
        out.mkdir()
        _, team, _ = run_and_capture(monkeypatch, cfg, out)
        params.append(lora_state(team, "agent0") | lora_state(team, "agent1"))
    # One Adam step moves each weight by ~lr = 1e-3; a wrong micro-batch weighting moves them by that much. Float
    # summation order alone moved one weight of 2,048 by 2e-6, so the bound is 1e-5.
    for name, p in params[0].items():
        torch.testing.assert_close(p, params[1][name], rtol=1e-4, atol=1e-5)


def test_checkpoint_restores_the_trained_adapters(monkeypatch, tmp_path, tiny_model_dir):
    cfg = tiny_cfg(tiny_model_dir)
    result, team, _ = run_and_capture(monkeypatch, cfg, tmp_path)
    loaded = load_team(cfg, result["checkpoint"])
    for agent in ("agent0", "agent1"):
        trained, restored = lora_state(team, agent), lora_state(loaded, agent)
        assert all(torch.equal(trained[n], restored[n]) for n in trained)
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_000002"


def test_value_heads_only_for_ppo(tiny_model_dir):
    cfg = tiny_cfg(tiny_model_dir)
    team = build_team(cfg, with_adapters=True)
    assert Policy(team, value_heads=False).value_heads is None
    assert len(Policy(team, value_heads=True).value_heads) == 2


def test_resume_continues_from_the_latest_checkpoint(monkeypatch, tmp_path, tiny_model_dir):
    monkeypatch.setattr(backend, "LabelVerifier", RandomVerifier)
    trainer.train(tiny_cfg(tiny_model_dir, "train.max_steps=2"), tmp_path, quiet=True)
    result = trainer.train(tiny_cfg(tiny_model_dir, "train.max_steps=3"), tmp_path, resume=True, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "time/step" in r] == [1, 2, 3]  # appended, step 3 only on resume
    assert result["steps"] == 3 and (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_000003"


class AlwaysRight:
    """The real task's sampling and prompts, but every answer counts as correct (a random model is never right)."""

    def __init__(self, name):
        self.task = get_task(name)

    def __getattr__(self, name):
        return getattr(self.task, name)

    def is_correct(self, predicted, problem):
        return True


def test_sft_trains_every_agent_on_the_kept_discussions_of_the_untrained_team(monkeypatch, tmp_path, tiny_model_dir):
    monkeypatch.setattr(trainer, "get_task", AlwaysRight)  # every discussion ends all right: every one is kept
    sampled = []  # the adapters of the team that answered, per discussion.run call
    real_run = discussion.run

    def capture(problems, task, generator, *args, **kwargs):
        sampled.append([s.adapter for s in generator.slots])
        return real_run(problems, task, generator, *args, **kwargs)

    monkeypatch.setattr(discussion, "run", capture)
    cfg = tiny_cfg(tiny_model_dir, "algo.name=sft", "algo.kl_coef=0")
    result, team, initial = run_and_capture(monkeypatch, cfg, tmp_path, verifier=None)
    # Both training steps discuss with the untrained team (adapters off); the final evaluation with the trained one.
    assert sampled == [[None, None], [None, None], ["agent0", "agent1"]]
    for agent in ("agent0", "agent1"):
        after = lora_state(team, agent)
        assert after and all(not torch.equal(initial[n], p) for n, p in after.items())
    rows = [r for r in metric_rows(tmp_path) if "time/step" in r]
    assert [r["sft/kept_fraction"] for r in rows] == [1.0, 1.0] and result["steps"] == 2
    assert all(r["loss/policy"] == -1.0 and r["ratio_mean"] == 1.0 for r in rows)  # ratio 1, advantage 1


def test_sft_keeps_only_discussions_whose_final_answers_are_all_right(monkeypatch, tmp_path, tiny_model_dir):
    # A random model is never right: nothing is kept, so nothing is trained and no step counts as a failure.
    cfg = tiny_cfg(tiny_model_dir, "algo.name=sft", "algo.kl_coef=0")
    result, team, initial = run_and_capture(monkeypatch, cfg, tmp_path, verifier=None)
    assert all(torch.equal(initial[n], p) for n, p in lora_state(team, "agent0").items())
    rows = [r for r in metric_rows(tmp_path) if "time/step" in r]
    assert [r["sft/kept_fraction"] for r in rows] == [0.0, 0.0] and result["steps"] == 2
    assert all(r["nonfinite_updates"] == 0.0 for r in rows)


def test_lr_decays_linearly_to_lr_final_ratio_over_every_optimizer_step(tiny_model_dir):
    from maporl.learner import Learner
    from maporl.utils import lr_factor

    # 4 optimizer steps in all, ratio 0.1: 1 − 0.9·k/4 = 1, 0.775, 0.55, 0.325, 0.1, then 0.1 for good.
    assert [lr_factor(k, 4, 0.1) for k in range(6)] == pytest.approx([1, 0.775, 0.55, 0.325, 0.1, 0.1])
    cfg = tiny_cfg(tiny_model_dir, "algo.lr=0.01", "algo.lr_final_ratio=0.1", "algo.epochs=2")
    team = build_team(cfg, with_adapters=True)
    learner = Learner(Policy(team, value_heads=False), cfg.algo, [0, 1], total_steps=2, seed=0)
    batch = answer_batch(team, 2)
    # Each update is 2 epochs x 1 minibatch = 2 optimizer steps: after the first the factor is 0.55.
    assert [learner.update(batch)["lr"] for _ in range(3)] == pytest.approx([0.0055, 0.001, 0.001])
    constant = Learner(Policy(team, value_heads=False), tiny_cfg(tiny_model_dir, "algo.lr=0.01").algo, [0, 1], 2, 0)
    assert [constant.update(batch)["lr"] for _ in range(2)] == [0.01, 0.01]  # lr_final_ratio 1 (default): no decay


def test_every_step_logs_what_the_incentives_add_after_the_baseline(monkeypatch, tmp_path, tiny_model_dir):
    """With a group baseline and random right/wrong, incentives fire and each step logs their share of the
    advantages; a kept share is at most 1 (no other rollout got the bonus)."""
    run_and_capture(monkeypatch, tiny_cfg(tiny_model_dir, "algo.name=grpo"), tmp_path)
    steps = [r for r in metric_rows(tmp_path) if "time/step" in r]
    assert steps and all("incentive_adv/abs_share" in r and r["incentive_adv/kept"] <= 1.0 for r in steps)


def test_init_from_starts_from_a_runs_adapters(monkeypatch, tmp_path, tiny_model_dir):
    """train.init_from loads a run's latest adapters before anything copies the weights out; a path that is not a
    run fails at once with a fix-it message."""
    from maporl.errors import UsageError

    first = tmp_path / "first"
    first.mkdir()
    result, _, _ = run_and_capture(monkeypatch, tiny_cfg(tiny_model_dir, "train.max_steps=1"), first)
    seen = {}

    def stop(cfg, team, *args):
        seen.update(lora_state(team, "agent0"))
        raise KeyboardInterrupt  # enough: the weights the backends would start from

    monkeypatch.setattr(trainer, "backends_for", stop)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(tiny_cfg(tiny_model_dir, f"train.init_from={first}"), tmp_path / "second", quiet=True)
    trained = lora_state(load_team(tiny_cfg(tiny_model_dir), result["checkpoint"]), "agent0")
    assert seen.keys() == trained.keys() and all(torch.equal(seen[n], trained[n]) for n in trained)
    with pytest.raises(UsageError, match="does not exist"):
        trainer.train(tiny_cfg(tiny_model_dir, f"train.init_from={tmp_path / 'none'}"), tmp_path / "third", quiet=True)
