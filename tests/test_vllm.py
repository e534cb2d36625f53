"""The vLLM backend with a fake engine on CPU: prompts, per-row seeds, one LoRA per agent, weight sync."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch
from conftest import tiny_cfg
from peft import PeftModel

from maporl.generation import Completion, GenRequest
from maporl.generation.vllm import VLLMGenerator
from maporl.team import build_team


class FakeLLM:
    def __init__(self):
        self.calls = []

    def generate(self, prompts, params, lora_request=None, use_tqdm=False):
        self.calls.append((prompts, params, lora_request))
        return [
            SimpleNamespace(
                outputs=[SimpleNamespace(text=f"The answer is {k}.", token_ids=[1, 2, 3], finish_reason="stop")]
            )
            for k in range(len(prompts))
        ]


def test_fake_engine_round_trip_and_sync(tmp_path, tiny_model_dir):
    cfg = tiny_cfg(tiny_model_dir, "generation.backend=vllm", "generation.temperature=0.7")
    team = build_team(cfg, with_adapters=True)
    engine = FakeLLM()
    gen = VLLMGenerator(cfg, team, engine=engine, workdir=str(tmp_path))
    first = {name: req.lora_int_id for name, req in gen.lora.items()}
    assert sorted(first) == ["agent0", "agent1"]
    requests = [
        GenRequest(({"role": "user", "content": "What is 1+2-0?"},), agent=i % 2, seed=100 + i) for i in range(4)
    ]
    assert gen.generate(requests) == [Completion(f"The answer is {k}.") for k in range(4)]
    prompts, params, loras = engine.calls[-1]
    assert all(p.startswith("<|im_start|>user\nWhat is 1+2-0?") and p.endswith("assistant\n") for p in prompts)
    assert [p.seed for p in params] == [100, 101, 102, 103] and {p.temperature for p in params} == {0.7}
    assert [r.lora_name for r in loras] == ["agent0", "agent1", "agent0", "agent1"]
    assert gen.tokens_generated == 12

    # An update changes agent1's adapter: sync writes it to a new versioned directory under new ids.
    model = team.models["base"]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".agent1." in name and "lora_B" in name:
                p.add_(0.5)
    gen.sync(team)
    second = {name: req.lora_int_id for name, req in gen.lora.items()}
    assert all(second[n] != first[n] for n in first)
    adapter_dir = tmp_path / "v000002" / "agent1"
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == cfg.algo.lora_rank and gen.lora["agent1"].lora_path == str(adapter_dir)
    # The written directory is a valid PEFT adapter with the updated weights.
    from transformers import AutoModelForCausalLM

    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_dir)
    got = {n: p for n, p in reloaded.named_parameters() if "lora_B" in n}
    want = {
        n.replace(".agent1.", ".default."): p for n, p in model.named_parameters() if ".agent1." in n and "lora_B" in n
    }
    assert got.keys() == want.keys() and all(torch.equal(got[n], want[n]) for n in got)
    gen.sync(team)
    assert not (tmp_path / "v000001").exists()  # old versions are cleaned up


def test_untrained_team_uses_no_lora(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, "generation.backend=vllm")
    gen = VLLMGenerator(cfg, build_team(cfg, with_adapters=False), engine=FakeLLM(), workdir=str(tmp_path))
    gen.generate([GenRequest(({"role": "user", "content": "Q"},), agent=0, seed=1)])
    assert gen.engine.calls[-1][2] == [None]
