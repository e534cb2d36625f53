"""Heterogeneous teams: agents on different base models (Qwen2 and Llama architectures, different tokenizers and
hidden sizes) train, checkpoint and evaluate with the same loop."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import lora_state, run_and_capture, tiny_cfg

from maporl.checkpoint import load_team
from maporl.errors import UsageError
from maporl.team import build_team


def hetero_cfg(qwen, llama, *extra):
    return tiny_cfg(qwen, f"model.agent_models=[{qwen},{llama},{qwen}]", "discussion.num_agents=3", *extra)


def test_team_layout(tiny_model_dir, tiny_llama_dir):
    team = build_team(hetero_cfg(tiny_model_dir, tiny_llama_dir), with_adapters=True)
    assert len(team.models) == 2 and [s.model_key for s in team.slots] == ["model0", "model1", "model0"]
    assert [s.adapter for s in team.slots] == ["agent0", "agent1", "agent2"]
    vocab = {k: len(t) for k, t in team.tokenizers.items()}
    assert vocab["model0"] != vocab["model1"]
    assert team.models["model1"].config.model_type == "llama"


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_heterogeneous_team_trains_and_reloads(monkeypatch, tmp_path, tiny_model_dir, tiny_llama_dir, algo):
    cfg = hetero_cfg(tiny_model_dir, tiny_llama_dir, f"algo.name={algo}", "algo.kl_coef=0.01")
    result, team, initial = run_and_capture(monkeypatch, cfg, tmp_path)
    loaded = load_team(cfg, result["checkpoint"])
    for agent in ("agent0", "agent1", "agent2"):
        trained, reloaded = lora_state(team, agent), lora_state(loaded, agent)
        assert trained and any(not torch.equal(initial[n], p) for n, p in trained.items()), agent  # it moved
        assert all(torch.equal(p, reloaded[n]) for n, p in trained.items()), agent  # and the checkpoint has them
    assert len(json.loads((tmp_path / "eval.json").read_text())["acc_per_agent_turn"]) == 3


def test_agent_models_must_match_agents(tiny_model_dir):
    with pytest.raises(UsageError, match="one model per agent"):
        tiny_cfg(tiny_model_dir, f"model.agent_models=[{tiny_model_dir}]")
    with pytest.raises(UsageError, match="adapters=per_agent"):
        tiny_cfg(
            tiny_model_dir, f"model.agent_models=[{tiny_model_dir},{tiny_model_dir}]", "discussion.adapters=shared"
        )
