"""The vLLM backend against a fake engine that enforces vLLM 0.33's contracts (fake_vllm.py): engine settings vLLM
accepts, prompts as token ids (one BOS), sampled ids and log-probabilities back, one LoRA per agent under ids never
reused, sleep / wake around the update (the CUDA cache freed first), Ray rollout workers writing each update into
their own engine, and what is refused before an engine is ever built."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from conftest import metric_rows, tiny_cfg
from fake_vllm import FakeLLM, VLLMValidationError
from peft import PeftModel

from maporl import trainer
from maporl.config import load_config
from maporl.errors import UsageError
from maporl.generation import Completion, GenRequest, encode_prompt
from maporl.generation.vllm import VLLMGenerator, engine_settings, max_lora_rank
from maporl.prompts import first_turn_prompt
from maporl.team import build_team

VLLM = ("generation.backend=vllm", "model.dtype=bfloat16")


def requests(n: int) -> list[GenRequest]:
    return [GenRequest(first_turn_prompt(f"What is {k}+2-0?"), agent=k % 2, seed=100 + k) for k in range(n)]


def vllm_cfg(model_dir, *extra: str):
    return tiny_cfg(model_dir, *VLLM, *extra)


def generator(cfg, team, tmp_path, **settings) -> VLLMGenerator:
    engine = FakeLLM(**(engine_settings(cfg, cfg.model.name_or_path) | settings))
    return VLLMGenerator(cfg, team, engine=engine, workdir=str(tmp_path))


def bump(team, adapter: str, by: float = 0.5) -> None:
    """An update of one adapter: every lora_B tensor moves."""
    with torch.no_grad():
        for name, p in team.models["base"].named_parameters():
            if f".{adapter}." in name and "lora_B" in name:
                p.add_(by)


def test_engine_settings_are_ones_vllm_accepts(tiny_model_dir, tmp_path):
    cfg = vllm_cfg(tiny_model_dir)
    settings = engine_settings(cfg, tiny_model_dir)
    assert settings["gpu_memory_utilization"] == 0.3 and settings["max_model_len"] is None
    assert settings["enable_sleep_mode"] is False and settings["logprobs_mode"] == "processed_logprobs"
    assert settings["enable_lora"] and settings["max_loras"] == 2 and settings["max_lora_rank"] == 8
    assert settings["dtype"] == "bfloat16" and settings["model"] == str(tiny_model_dir.resolve())
    FakeLLM(**settings)  # every keyword an EngineArgs field, every value in range
    cfg = vllm_cfg(
        tiny_model_dir,
        "generation.vllm_gpu_memory_utilization=0.5",
        "generation.max_model_len=256",
        "generation.vllm_sleep=true",
    )
    settings = engine_settings(cfg, tmp_path)
    assert (settings["gpu_memory_utilization"], settings["max_model_len"], settings["enable_sleep_mode"]) == (
        0.5,
        256,
        True,
    )


@pytest.mark.parametrize(("rank", "allowed"), [(1, 1), (2, 8), (4, 8), (8, 8), (12, 16), (100, 128), (300, 320)])
def test_max_lora_rank_is_the_smallest_rank_vllm_accepts_that_holds_the_adapter(
    tiny_model_dir, tmp_path, rank, allowed
):
    assert max_lora_rank(rank) == allowed
    cfg = vllm_cfg(tiny_model_dir, f"algo.lora_rank={rank}")
    team = build_team(cfg, with_adapters=True)
    gen = generator(cfg, team, tmp_path)
    gen.generate(requests(2))  # the engine loads the rank-r adapters under max_lora_rank
    assert gen.engine.max_lora_rank == allowed
    if rank != allowed:
        with pytest.raises(ValueError, match="max_lora_rank: Input should be"):
            FakeLLM(**(engine_settings(cfg, tiny_model_dir) | {"max_lora_rank": rank}))  # what was passed before


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ((), "needs 16-bit weights, not model.dtype=float32 .* set model.dtype=bfloat16"),
        (("model.dtype=bfloat16", "generation.temperature=2.5"), "temperature 0 or 0.01 to 2, not 2.5"),
        (("model.dtype=bfloat16", "generation.temperature=0.005"), "temperature 0 or 0.01 to 2, not 0.005"),
        (("model.dtype=bfloat16", "algo.lora_rank=1024"), "LoRA ranks up to 512"),
        (("model.dtype=bfloat16", "discussion.adapters=separate"), "serves one base model"),
        (("model.dtype=bfloat16", "backend=ray"), "ray.gpus_per_rollout_worker"),
    ],
)
def test_what_vllm_would_refuse_is_refused_while_the_config_is_checked(overrides, message):
    with pytest.raises(UsageError, match=message):
        load_config(None, ["generation.backend=vllm", *overrides])


def test_a_float32_engine_would_crash_at_start_up(tiny_model_dir):
    """What the float32 check prevents: vLLM runs dummy adapters at start-up, and its LoRA kernel asserts 16 bits."""
    settings = engine_settings(tiny_cfg(tiny_model_dir), tiny_model_dir)  # the hf default: float32
    with pytest.raises(RuntimeError, match="Engine core initialization failed"):
        FakeLLM(**settings)


def test_train_with_vllm_and_float32_stops_before_loading_anything(tmp_path, capsys):
    from maporl.cli import main

    code = main(["train", "--out", str(tmp_path / "run"), "generation.backend=vllm"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "model.dtype=bfloat16" in err
    assert not (tmp_path / "run").exists()


def test_round_trip_and_sync_under_new_ids(tmp_path, tiny_model_dir):
    cfg = vllm_cfg(tiny_model_dir, "generation.temperature=0.7")
    team = build_team(cfg, with_adapters=True)
    gen = generator(cfg, team, tmp_path)
    engine = gen.engine
    first = {name: req.lora_int_id for name, req in gen.lora.items()}
    assert sorted(first) == ["agent0", "agent1"] and gen.weights_version == 1
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
    assert [r.lora_name for r in loras] == ["agent0@v1", "agent1@v1", "agent0@v1", "agent1@v1"]
    assert gen.tokens_generated == 16

    # An update changes agent1's adapter: sync writes it to a new versioned directory under new ids and names.
    bump(team, "agent1")
    gen.sync(team)
    second = {name: req.lora_int_id for name, req in gen.lora.items()}
    assert all(second[n] != first[n] for n in first) and gen.weights_version == 2
    adapter_dir = tmp_path / "v000002" / "agent1"
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == cfg.algo.lora_rank and gen.lora["agent1"].lora_path == str(adapter_dir.resolve())
    # The written directory is a valid PEFT adapter with the updated weights.
    from transformers import AutoModelForCausalLM

    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_dir)
    got = {n: p for n, p in reloaded.named_parameters() if "lora_B" in n}
    want = {
        n.replace(".agent1.", ".default."): p
        for n, p in team.models["base"].named_parameters()
        if ".agent1." in n and "lora_B" in n
    }
    assert got.keys() == want.keys() and all(torch.equal(got[n], want[n].to(got[n].dtype)) for n in got)
    # And the engine serves exactly those weights to agent 1's rows.
    gen.generate(requests(2))
    served = gen.engine.served[1]
    state = team.adapter_states()[("base", "agent1")]
    assert served.path == str(adapter_dir.resolve()) and all(torch.equal(served.tensors[k], state[k]) for k in state)
    gen.sync(team)
    assert not (tmp_path / "v000001").exists() and (tmp_path / "v000002").exists()  # the previous version stays


def test_a_reused_lora_id_keeps_serving_the_old_weights(tmp_path, tiny_model_dir):
    """Why every version gets new ids: the engine caches adapters by id, as vLLM does."""
    cfg = vllm_cfg(tiny_model_dir)
    team = build_team(cfg, with_adapters=True)
    gen = generator(cfg, team, tmp_path)
    gen.generate(requests(2))
    old = {k: v.clone() for k, v in team.adapter_states()[("base", "agent1")].items()}
    bump(team, "agent1")
    stale = gen._lora_request("agent1@v1", gen.lora["agent1"].lora_int_id, tmp_path / "elsewhere")
    gen.engine.generate([{"prompt_token_ids": [1, 2, 3, 4]}], gen.engine.requests[-1][1][:1], lora_request=[stale])
    assert all(torch.equal(gen.engine.served[0].tensors[k], old[k]) for k in old)


def test_a_version_set_without_sync_is_refused(tmp_path, tiny_model_dir):
    cfg = vllm_cfg(tiny_model_dir)
    gen = generator(cfg, build_team(cfg, with_adapters=True), tmp_path)
    gen.weights_version = 5  # what a rollout worker did before: the engine still held version 1
    with pytest.raises(RuntimeError, match="holds adapters of weights version 1, but the generator is at version 5"):
        gen.generate(requests(2))


def test_ray_rollout_workers_write_each_update_into_their_engine(monkeypatch, tmp_path, tiny_model_dir):
    """A rollout worker (the class Ray runs as an actor, here in-process) loads the learners' adapters under the
    step's version; its engine then serves those weights under that version, and the transcripts record it."""
    from maporl.distributed.actors import _GeneratorWorker
    from maporl.tasks import get_task

    fake = types.ModuleType("vllm")
    fake.LLM = FakeLLM
    monkeypatch.setitem(sys.modules, "vllm", fake)
    cfg = vllm_cfg(tiny_model_dir)
    worker = _GeneratorWorker(cfg)
    learner_team = build_team(cfg, with_adapters=True)
    bump(learner_team, "agent0", 0.25)
    states = learner_team.adapter_states()
    worker.load_adapters(states, 5)
    task = get_task(cfg.task.name)
    transcripts = worker.discuss(task.sample(2, 0, "train"), cfg.task.name, cfg.discussion, 0, 4, 0)
    engine = worker.generator.engine
    assert {tr.meta["weights_version"] for tr in transcripts} == {5}
    for served in engine.served:
        want = states[("base", served.name.split("@")[0])]
        assert served.name.endswith("@v5") and all(torch.equal(served.tensors[k], want[k]) for k in want)


def test_wake_up_frees_the_cuda_cache_first(monkeypatch, tmp_path, tiny_model_dir):
    order = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: order.append("empty_cache"))
    cfg = vllm_cfg(tiny_model_dir, "generation.vllm_sleep=true")
    team = build_team(cfg, with_adapters=True)
    gen = generator(cfg, team, tmp_path)
    real_wake = gen.engine.wake_up
    monkeypatch.setattr(gen.engine, "wake_up", lambda tags=None: order.append("wake_up") or real_wake(tags))
    for _ in range(2):
        gen.generate(requests(2))
        gen.sleep()
        gen.sync(team)
    assert order == ["empty_cache", "wake_up"] * 2


def test_a_prompt_with_no_room_for_an_answer_is_refused_naming_its_row(tmp_path, tiny_model_dir):
    cfg = vllm_cfg(tiny_model_dir)
    team = build_team(cfg, with_adapters=True)
    reqs = requests(4)
    reqs[2] = GenRequest(first_turn_prompt("What is 1+2-0? " * 8), agent=0, seed=1)
    lengths = [len(encode_prompt(team.tokenizer(0), r.messages)) for r in reqs]
    limit = max(lengths)  # row 2 fills the whole context: vLLM would fail every row of the call
    gen = generator(vllm_cfg(tiny_model_dir, f"generation.max_model_len={limit}"), team, tmp_path)
    assert gen.max_model_len == limit
    with pytest.raises(
        UsageError, match=f"row 2 \\(agent 0\\) has a prompt of {limit} tokens.*generation.max_model_len"
    ):
        gen.generate(reqs)
    assert gen.engine.calls == []  # refused before the engine was called
    gen.max_model_len = 0  # without the check: the engine fails the whole call
    with pytest.raises(VLLMValidationError, match=f"length {limit}"):
        gen.generate(reqs)
    roomier = generator(vllm_cfg(tiny_model_dir, f"generation.max_model_len={limit + 1}"), team, tmp_path / "b")
    assert len(roomier.generate(reqs)) == 4  # one position left for the answer is enough


def test_untrained_team_uses_no_lora(tiny_model_dir, tmp_path):
    cfg = vllm_cfg(tiny_model_dir)
    gen = generator(cfg, build_team(cfg, with_adapters=False), tmp_path)
    gen.generate(requests(1))
    assert gen.engine.requests[-1][2] == [None]


def test_sleep_after_the_rollout_and_wake_before_the_next(tiny_model_dir, tmp_path):
    for sleep, expected in ((True, ["generate", "sleep(1)", "wake_up", "generate"]), (False, ["generate"] * 2)):
        cfg = vllm_cfg(tiny_model_dir, f"generation.vllm_sleep={sleep}")
        team = build_team(cfg, with_adapters=True)
        gen = generator(cfg, team, tmp_path / str(sleep))
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
    cfg = vllm_cfg(tiny_model_dir)
    team = build_team(cfg, with_adapters=False)
    team.tokenizers["base"] = llama_style
    gen = generator(cfg, team, tmp_path)
    gen.generate([GenRequest(messages, 0, 1)])
    ids = gen.engine.requests[-1][0][0]["prompt_token_ids"]
    assert ids[0] == 1 and ids.count(1) == 1


def test_training_loop_sleeps_the_engine_for_each_update(monkeypatch, tmp_path, tiny_model_dir):
    """The whole loop with generation.backend=vllm on the fake engine: rollout, sleep, update, wake + new adapters,
    rollout; the update trains on the engine's token ids."""
    fake = types.ModuleType("vllm")
    fake.LLM = FakeLLM
    monkeypatch.setitem(sys.modules, "vllm", fake)
    FakeLLM.instances.clear()
    cfg = vllm_cfg(tiny_model_dir, "generation.vllm_sleep=true", "generation.max_model_len=512")
    trainer.train(cfg, tmp_path, quiet=True)
    (engine,) = FakeLLM.instances
    assert engine.settings["enable_sleep_mode"] and engine.settings["max_model_len"] == 512
    rollout = ["generate", "generate", "sleep(1)", "wake_up"]  # 2 turns, then the update between sleep and wake
    assert engine.calls == rollout * 2 + ["generate"] * 2  # 2 steps, then the final evaluation's 2 turns
    steps = [r for r in metric_rows(tmp_path) if "time/step" in r]
    assert len(steps) == 2 and all(r["train/truncated_rate"] == 0.0 for r in steps)
    transcripts = [
        json.loads(line) for line in (tmp_path / "transcripts" / "step_000002.jsonl").read_text().splitlines()
    ]
    assert {tr["meta"]["weights_version"] for tr in transcripts} == {2}  # sampled after the first update
