"""Tokenizer round trip, seeded sampling, and mixed-adapter batches on a random ~1M model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from peft import LoraConfig, get_peft_model

from maporl import lora_batch
from maporl.generation import GenRequest
from maporl.generation.hf import HFGenerator
from maporl.models import load_base, load_tokenizer
from maporl.prompts import first_turn_prompt
from maporl.records import AgentSlot


def test_tokenizer_round_trip_and_one_token_per_digit(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    text = "What is 1234+56-7? 1290-7=1283. The answer is 1283. ünïcødé ✓"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    for number in ("1234", "90210", "-7"):
        pieces = [p.replace("Ġ", "") for p in tok.tokenize(number)]
        assert [p for p in pieces if p.isdigit()] == [d for d in number if d.isdigit()]
    assert tok.padding_side == "left"
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def _requests(n: int, agents: list[int]) -> list[GenRequest]:
    return [GenRequest(first_turn_prompt(f"What is {k}+{k}-1?"), agents[k % len(agents)], 1000 + k) for k in range(n)]


def test_answers_cut_off_at_max_new_tokens_are_marked(tiny_model_dir):
    model, tok = load_base(str(tiny_model_dir))
    reqs = _requests(4, [0])
    short = HFGenerator({"m": model}, {"m": tok}, [AgentSlot("m")], max_new_tokens=2, batch_size=4).generate(reqs)
    assert all(c.truncated for c in short)  # a random model does not end its turn within 2 tokens
    longer = HFGenerator({"m": model}, {"m": tok}, [AgentSlot("m")], max_new_tokens=12, batch_size=4).generate(reqs)
    assert [c.text[: len(s.text)] for c, s in zip(longer, short, strict=True)] == [s.text for s in short]


def test_same_seed_same_text_regardless_of_batch(tiny_model_dir):
    model, tok = load_base(str(tiny_model_dir))
    reqs = _requests(6, [0])
    big = HFGenerator({"m": model}, {"m": tok}, [AgentSlot("m")], max_new_tokens=12, batch_size=6).generate(reqs)
    small = HFGenerator({"m": model}, {"m": tok}, [AgentSlot("m")], max_new_tokens=12, batch_size=2).generate(reqs)
    assert big == small
    assert len(set(big)) > 1  # different seeds sample different text from a random model
    again = HFGenerator({"m": model}, {"m": tok}, [AgentSlot("m")], max_new_tokens=12, batch_size=6).generate(reqs)
    assert again == big


@pytest.fixture
def two_adapter_model(tiny_model_dir):
    model, tok = load_base(str(tiny_model_dir))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, init_lora_weights=False)
    peft_model = get_peft_model(model, lora, adapter_name="agent0")
    peft_model.add_adapter("agent1", lora)
    torch.manual_seed(1)
    with torch.no_grad():  # make the two adapters clearly different from each other and from the base
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.eval()
    return peft_model, tok


@pytest.mark.parametrize("merge", ["never", "always"])
def test_two_adapters_generate_in_one_batch(two_adapter_model, merge):
    model, tok = two_adapter_model
    slots = [AgentSlot("m", "agent0"), AgentSlot("m", "agent1"), AgentSlot("m", None)]
    gen = HFGenerator({"m": model}, {"m": tok}, slots, temperature=0.0, max_new_tokens=10, merge_adapters=merge)
    calls = []
    original = model.generate

    def spy(**kw):
        merged = [m.spans for m in model.modules() if isinstance(m, lora_batch.MergedLinear)]
        calls.append(kw.get("adapter_names") or [name for start, end, name in merged[0] for _ in range(start, end)])
        assert len(merged) == (0 if merge == "never" else 7 * 2)  # every LoRA layer of the 2-layer model
        return original(**kw)

    model.generate = spy
    mixed = gen.generate(_requests(6, [0, 1, 2]))
    # One generate call, one adapter per row, rows grouped by adapter (the sliced mixed forward)
    assert calls == [["__base__"] * 2 + ["agent0"] * 2 + ["agent1"] * 2]
    # Each row matches generating it alone with its adapter active: the adapters really are applied per row.
    alone = [gen.generate([r])[0] for r in _requests(6, [0, 1, 2])]
    assert [c.text for c in mixed] == [c.text for c in alone]
    same_prompt = [GenRequest(first_turn_prompt("What is 3+4-5?"), agent, 7) for agent in (0, 1, 2)]
    assert len(set(gen.generate(same_prompt))) == 3  # agent0, agent1 and the base say different things
    assert not any(isinstance(m, lora_batch.MergedLinear) for m in model.modules())  # the LoRA layers are back


def test_merged_decoding_samples_what_the_adapters_sample(two_adapter_model):
    """Merged weights (W + s·B·A) change only float rounding: the same tokens, log-probs within 1e-4."""
    model, tok = two_adapter_model
    lora_batch.install(model)
    slots = [AgentSlot("m", "agent0"), AgentSlot("m", "agent1"), AgentSlot("m", None)]
    reqs = _requests(12, [0, 1, 2])
    out = {
        merge: HFGenerator({"m": model}, {"m": tok}, slots, max_new_tokens=12, merge_adapters=merge).generate(reqs)
        for merge in ("never", "always")
    }
    assert [c.token_ids for c in out["always"]] == [c.token_ids for c in out["never"]]
    pairs = zip(out["always"], out["never"], strict=True)
    diff = max(abs(a - b) for x, y in pairs for a, b in zip(x.logprobs, y.logprobs, strict=True))
    assert 0 < diff < 1e-4  # merged really ran (rounding differs), and sampled the same distribution


@pytest.mark.parametrize(
    ("layout", "model_keys", "adapters"),
    [
        ("per_agent", ["base"], ["agent0", "agent1", "agent2"]),
        ("shared", ["base"], ["shared", "shared", "shared"]),
        ("separate", ["agent0", "agent1", "agent2"], ["agent0", "agent1", "agent2"]),
    ],
)
def test_team_layouts(tiny_model_dir, layout, model_keys, adapters):
    from maporl.config import load_config
    from maporl.generation.registry import build_generator
    from maporl.team import build_team

    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", f"discussion.adapters={layout}"])
    team = build_team(cfg, with_adapters=True)
    assert sorted(team.models) == model_keys
    assert [s.adapter for s in team.slots] == adapters
    assert sorted(a for m in team.models.values() for a in m.peft_config) == sorted(set(adapters))
    untrained = build_team(cfg, with_adapters=False)
    assert list(untrained.models) == ["base"] and all(s.adapter is None for s in untrained.slots)
    # Fresh LoRA adapters are the identity: the adapter team says exactly what the bare base says.
    reqs = _requests(3, [0, 1, 2])
    assert build_generator(cfg, team).generate(reqs) == build_generator(cfg, untrained).generate(reqs)


def test_unknown_backend_is_a_usage_error(tiny_model_dir):
    from maporl.config import load_config
    from maporl.errors import UsageError
    from maporl.generation.registry import build_generator

    with pytest.raises(UsageError, match="did you mean 'vllm'"):  # while the config is read
        load_config(None, [f"model.name_or_path={tiny_model_dir}", "generation.backend=vlm"])
    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}"])  # a Config built in code is not checked
    cfg = dataclasses.replace(cfg, generation=dataclasses.replace(cfg.generation, backend="vlm"))
    with pytest.raises(UsageError, match="unknown"):
        build_generator(cfg)


def test_hashed_gumbel_noise_samples_the_softmax():
    from maporl.generation.hf import SeededGumbelSampler

    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    temperature = 0.7
    counts = torch.zeros(5)
    rows = 4000
    sampler = SeededGumbelSampler(list(range(rows)), temperature)
    for _ in range(5):  # five decoding steps: each step's noise is fresh
        counts += torch.bincount(sampler(None, logits.expand(rows, 5)).argmax(-1), minlength=5)
    expected = torch.softmax(logits / temperature, -1) * rows * 5
    # 20k draws: each count is within 5 standard deviations of its expectation.
    assert torch.all((counts - expected).abs() < 5 * expected.sqrt() + 1), (counts, expected)


def test_hashed_gumbel_noise_is_per_row_and_per_step():
    from maporl.generation.hf import SeededGumbelSampler

    a = SeededGumbelSampler([11, 12, 13], 1.0)
    b = SeededGumbelSampler([99, 12], 1.0)
    noise_a, noise_b = a.noise(300, "cpu"), b.noise(300, "cpu")
    assert torch.equal(noise_a[1], noise_b[1])  # same seed, same step: same noise whoever shares the batch
    assert not torch.allclose(noise_a[0], noise_a[2])
    a.step += 1
    assert not torch.allclose(a.noise(300, "cpu")[1], noise_a[1])
    assert torch.isfinite(noise_a).all()
    # Gumbel(0, 1): mean is the Euler-Mascheroni constant, variance pi^2 / 6.
    big = SeededGumbelSampler(list(range(64)), 1.0).noise(4096, "cpu")
    assert abs(big.mean().item() - 0.5772) < 0.02 and abs(big.var().item() - 1.6449) < 0.05


def test_tensor_hash_matches_the_python_hash_bit_for_bit():
    from maporl.generation.hf import _as_int32, _mix32, _mix32_tensor

    values = [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 123456789, 3_000_000_000]
    got = _mix32_tensor(torch.tensor([_as_int32(v) for v in values], dtype=torch.int32)).tolist()
    assert got == [_as_int32(_mix32(v)) for v in values]
    assert len(set(_mix32(v) for v in range(100_000))) == 100_000  # bijective on a range


def test_row_keys_are_the_python_hash_of_seed_and_step():
    """The keys computed on tensors are the documented hash, so a seed samples what it sampled before."""
    from maporl.generation.hf import _M32, SeededGumbelSampler, _as_int32, _mix32

    seeds = [0, 7, 2**32 + 5, 2**62 + 12345, -3]
    sampler = SeededGumbelSampler(seeds, 1.0)
    for step in (0, 1, 63, 10_000):
        sampler.step = step
        k1, k2 = sampler._keys("cpu")
        for row, s in enumerate(s % 2**63 for s in seeds):
            a = _mix32((s & _M32) ^ _mix32((s >> 32) ^ _mix32(step)))
            assert k1[row, 0].item() == _as_int32(a)
            assert k2[row, 0].item() == _as_int32(_mix32(a ^ _mix32((step + 0x9E3779B9) & _M32)))
