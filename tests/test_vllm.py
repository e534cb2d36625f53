"""The vLLM backend with a fake engine on CPU: engine settings, prompts as token ids (one BOS), sampled ids and
log-probabilities back, one LoRA per agent, weight sync, and sleep / wake around the update in the training loop."""

from __future__ import annotations

import json
import sys
import types
from types import SimpleNamespace

import torch
from conftest import metric_rows, tiny_cfg
from peft import PeftModel

from maporl import trainer
from maporl.generation import Completion, GenRequest, encode_prompt
from maporl.generation.vllm import VLLMGenerator, engine_settings
from maporl.prompts import first_turn_prompt
from maporl.team import build_team


class FakeLLM:
    """vLLM's LLM as the generator uses it. Every answer: 3 tokens taken from the prompt, then the end of turn
    (`stop_token_ids[0]`), each at log-probability −0.5 − 0.1·k; `calls` records generate / sleep / wake_up."""

    instances: list[FakeLLM] = []

    def __init__(self, **settings):
        self.settings, self.calls, self.requests = settings, [], []
        FakeLLM.instances.append(self)

    def generate(self, prompts, params, lora_request=None, use_tqdm=False):
        self.calls.append("generate")
        self.requests.append((prompts, params, lora_request))
        outputs = []
        for prompt, p in zip(prompts, params, strict=True):
            ids = [*prompt["prompt_token_ids"][-3:], p.stop_token_ids[0]]
            logprobs = [{t: SimpleNamespace(logprob=-0.5 - 0.1 * k)} for k, t in enumerate(ids)]
            out = SimpleNamespace(text=f"answer {ids[0]}", token_ids=ids, logprobs=logprobs, finish_reason="stop")
            outputs.append(SimpleNamespace(outputs=[out]))
        return outputs

    def sleep(self, level):
        self.calls.append(f"sleep({level})")

    def wake_up(self):
        self.calls.append("wake_up")


def requests(n: int) -> list[GenRequest]:
    return [GenRequest(first_turn_prompt(f"What is {k}+2-0?"), agent=k % 2, seed=100 + k) for k in range(n)]


def test_engine_settings_leave_room_for_the_update(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, "generation.backend=vllm")
    settings = engine_settings(cfg, tmp_path)
    assert settings["gpu_memory_utilization"] == 0.3 and settings["max_model_len"] is None
    assert settings["enable_sleep_mode"] is False and settings["logprobs_mode"] == "processed_logprobs"
    assert settings["enable_lora"] and settings["max_loras"] == 2 and settings["max_lora_rank"] == 8
    cfg = tiny_cfg(
        tiny_model_dir,
        "generation.vllm_gpu_memory_utilization=0.5",
        "generation.max_model_len=2048",
        "generation.vllm_sleep=true",
    )
    settings = engine_settings(cfg, tmp_path)
    assert (settings["gpu_memory_utilization"], settings["max_model_len"], settings["enable_sleep_mode"]) == (
        0.5,
        2048,
        True,
    )


def test_fake_engine_round_trip_and_sync(tmp_path, tiny_model_dir):
    cfg = tiny_cfg(tiny_model_dir, "generation.backend=vllm", "generation.temperature=0.7")
    team = build_team(cfg, with_adapters=True)
    engine = FakeLLM()
    gen = VLLMGenerator(cfg, team, engine=engine, workdir=str(tmp_path))
    first = {name: req.lora_int_id for name, req in gen.lora.items()}
    assert sorted(first) == ["agent0", "agent1"]
    reqs = requests(4)
    done = gen.generate(reqs)
    prompts, params, loras = engine.requests[-1]
    tokenizer = team.tokenizer(0)
    assert [p["prompt_token_ids"] for p in prompts] == [encode_prompt(tokenizer, r.messages) for r in reqs]
    eos = tokenizer.eos_token_id
    assert all(c == Completion(f"answer {c.token_ids[0]}", False, c.token_ids) for c in done)
    assert all(c.token_ids[-1] == eos and c.logprobs == (-0.5, -0.6, -0.7, -0.8) for c in done)
    assert [p.seed for p in params] == [100, 101, 102, 103] and {p.temperature for p in params} == {0.7}
    assert all(p.stop_token_ids == [eos] and p.logprobs == 0 for p in params)
    assert [r.lora_name for r in loras] == ["agent0", "agent1", "agent0", "agent1"]
    assert gen.tokens_generated == 16

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
    gen.generate(requests(1))
    assert gen.engine.requests[-1][2] == [None]


def test_sleep_after_the_rollout_and_wake_before_the_next(tiny_model_dir, tmp_path):
    for sleep, expected in ((True, ["generate", "sleep(1)", "wake_up", "generate"]), (False, ["generate"] * 2)):
        cfg = tiny_cfg(tiny_model_dir, "generation.backend=vllm", f"generation.vllm_sleep={sleep}")
        team = build_team(cfg, with_adapters=True)
        gen = VLLMGenerator(cfg, team, engine=FakeLLM(), workdir=str(tmp_path / str(sleep)))
        gen.generate(requests(2))
        gen.sleep()
        before = gen.lora["agent0"].lora_int_id
        gen.sync(team)  # after the update: wake, then the new adapters
        gen.generate(requests(2))
        assert gen.engine.calls == expected
        assert gen.engine.requests[-1][2][0].lora_int_id != before  # the woken engine gets the new weights


def test_prompts_are_token_ids_with_one_bos_under_a_llama_style_template(tiny_model_dir, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<pad>", "<s>", "</s>"]
    backend.train_from_iterator(["What is 1+2-0? [INST] [/INST]"] * 50, trainers.BpeTrainer(special_tokens=specials))
    # As Llama's tokenizers do: BOS added by the tokenizer itself, and written by the chat template too.
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    llama_style = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template="{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}",
    )
    messages = first_turn_prompt("What is 1+2-0?")
    text = llama_style.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    assert llama_style(text)["input_ids"][:2] == [1, 1]  # the text prompt vLLM used to get: two BOS
    cfg = tiny_cfg(tiny_model_dir, "generation.backend=vllm")
    team = build_team(cfg, with_adapters=False)
    team.tokenizers["base"] = llama_style
    engine = FakeLLM()
    VLLMGenerator(cfg, team, engine=engine, workdir=str(tmp_path)).generate([GenRequest(messages, 0, 1)])
    ids = engine.requests[-1][0][0]["prompt_token_ids"]
    assert ids[0] == 1 and ids.count(1) == 1


def test_training_loop_sleeps_the_engine_for_each_update(monkeypatch, tmp_path, tiny_model_dir):
    """The whole loop with generation.backend=vllm on the fake engine: rollout, sleep, update, wake + new adapters,
    rollout; the update trains on the engine's token ids."""
    fake = types.ModuleType("vllm")
    fake.LLM = FakeLLM
    monkeypatch.setitem(sys.modules, "vllm", fake)
    FakeLLM.instances.clear()
    cfg = tiny_cfg(
        tiny_model_dir, "generation.backend=vllm", "generation.vllm_sleep=true", "generation.max_model_len=512"
    )
    trainer.train(cfg, tmp_path, quiet=True)
    (engine,) = FakeLLM.instances
    assert engine.settings["enable_sleep_mode"] and engine.settings["max_model_len"] == 512
    rollout = ["generate", "generate", "sleep(1)", "wake_up"]  # 2 turns, then the update between sleep and wake
    assert engine.calls == rollout * 2 + ["generate"] * 2  # 2 steps, then the final evaluation's 2 turns
    steps = [r for r in metric_rows(tmp_path) if "time/step" in r]
    assert len(steps) == 2 and all(r["train/truncated_rate"] == 0.0 for r in steps)
