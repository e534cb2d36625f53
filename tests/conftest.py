"""Shared fixtures: a random ~1M-parameter Qwen2 model with our tokenizer, saved as a Hugging Face directory."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch
from transformers import Qwen2ForCausalLM

from maporl.base.build import BuildConfig, model_config
from maporl.base.data import sft_example
from maporl.base.tokenizer import train_tokenizer
from maporl.tasks.arithmetic import ArithmeticTask

try:  # imported whole before any test: one that hides it (test_ray.py) would otherwise leave it half-imported
    import ray  # noqa: F401
except ImportError:
    pass

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test workers on two cores: one torch thread each (two threads each spin against each other, 10x slower).
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # and for the processes the tests start


def pytest_collection_modifyitems(items):
    """The longest tests first, in two halves, for `-n 2 --dist worksteal` (scripts/test.sh), which gives each
    worker one half and lets an idle worker take the end of the other's queue: each half starts with every other
    slow Ray test (a Ray run mostly waits on its actors' start-up, so two at once fill both cores), then every other
    module of the other slow tests (a module's fixtures are then made once), then the rest."""
    marked = [(item, item.get_closest_marker("slow"), item.get_closest_marker("ray")) for item in items]
    ray = [item for item, slow, on_ray in marked if slow and on_ray]
    modules = list(dict.fromkeys(item.module.__name__ for item, slow, on_ray in marked if slow and not on_ray))
    slow = [[item for item, s, r in marked if s and not r and item.module.__name__ == m] for m in modules]
    first = ray[0::2] + [item for module in slow[0::2] for item in module]
    second = ray[1::2] + [item for module in slow[1::2] for item in module]
    rest = [item for item, slow, on_ray in marked if not slow]
    fill = max(0, len(items) // 2 - len(first))
    items[:] = first + rest[:fill] + second + rest[fill:]


TINY = BuildConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256, vocab_size=400)


def chat_corpus(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    tasks = {name: ArithmeticTask(name) for name in ("arith_chain", "arith_long", "arith_word")}
    corpus = []
    for i in range(n):
        prompt, target = sft_example(rng, tasks, i)
        corpus.append(f"<|im_start|>user\n{prompt[-1]['content']}<|im_end|>\n<|im_start|>assistant\n{target}")
    return corpus


def make_tokenizer():
    return train_tokenizer(chat_corpus(0, 300), TINY.vocab_size)


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(model_config(TINY, tokenizer))
    path = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A Llama-architecture random model with its own (smaller) tokenizer and hidden size: for heterogeneous teams."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(chat_corpus(1, 200), 330)
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    path = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# Helpers shared by the training, reliability, Ray, vLLM and report tests (import them: `from conftest import ...`).


def tiny_overrides(model_dir) -> list[str]:
    """2 agents x 2 turns, 8 new tokens, 2 problems x 2 rollouts per step, 2 steps: the unit-test run."""
    return [
        f"model.name_or_path={model_dir}",
        "discussion.num_agents=2",
        "discussion.turns=2",
        "generation.max_new_tokens=8",
        "train.problems_per_step=2",
        "algo.rollouts_per_problem=2",
        "train.max_steps=2",
        "train.checkpoint_every=0",
        "train.transcripts_every=1",
        "eval.num_problems=2",
    ]


def tiny_cfg(model_dir, *extra: str):
    from maporl.config import load_config

    return load_config(None, [*tiny_overrides(model_dir), *extra])


class RandomVerifier:
    """Scores that vary, so group baselines give non-zero advantages even for a random model's gibberish."""

    def __init__(self, task):
        self.generator = torch.Generator().manual_seed(0)

    def score(self, transcripts):
        n, t = transcripts[0].num_agents, transcripts[0].num_turns
        return (torch.rand(len(transcripts), n, t, generator=self.generator) > 0.5).float()


def lora_state(team, adapter) -> dict[str, torch.Tensor]:
    """A copy of every LoRA tensor of one adapter."""
    return {
        n: p.detach().clone() for m in team.models.values() for n, p in m.named_parameters() if f".{adapter}." in n
    }


def run_and_capture(monkeypatch, cfg, run_dir, verifier=RandomVerifier):
    """Train (by default with varying scores: `RandomVerifier`; None keeps the label verifier); returns (result,
    the trained team, its weights before training)."""
    from maporl import trainer
    from maporl.distributed import backend

    if verifier is not None:
        monkeypatch.setattr(backend, "LabelVerifier", verifier)
    teams, initial = [], {}
    real_build_team = trainer.build_team

    def build_and_snapshot(c, with_adapters):
        teams.append(real_build_team(c, with_adapters))
        initial.update({n: p.detach().clone() for m in teams[-1].models.values() for n, p in m.named_parameters()})
        return teams[-1]

    monkeypatch.setattr(trainer, "build_team", build_and_snapshot)
    result = trainer.train(cfg, run_dir, quiet=True)
    return result, teams[0], initial


def metric_rows(run_dir) -> list[dict]:
    """The rows of a run's metrics.jsonl."""
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def answer_batch(team, agents: int):
    """A TrainBatch of one answer ("The answer is 3." and the end of turn) per agent at turn 0, advantage 1 on every
    answer token."""
    from maporl.episodes import encode_episodes
    from maporl.records import Answer, Problem, TrainBatch, Transcript

    prompt = ({"role": "user", "content": "What is 1+2-0?"},)
    tokenizer = team.tokenizer(0)
    ids = (*tokenizer("The answer is 3.", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id)
    answers = tuple(Answer(i, 0, prompt, "The answer is 3.", "3", token_ids=ids) for i in range(agents))
    tr = Transcript(Problem("p", "What is 1+2-0?", "3", "t"), (answers,))
    episodes = encode_episodes(team.tokenizer(0), [tr], [(0, i, 0) for i in range(agents)])
    return TrainBatch(episodes, episodes.answer_mask.float(), None, None, None, None)


# backend=ray: the run both Ray test files compare with in-process (test_ray.py, test_ray_faults.py).


@pytest.fixture
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


def ray_run(cfg, out, resume=False):
    out.mkdir(parents=True, exist_ok=True)
    from maporl import trainer

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


@pytest.fixture(scope="session")
def in_process(tiny_model_dir, tmp_path_factory):
    """The in-process run every Ray run must reproduce bit for bit (once per test worker)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ray_run(tiny_cfg(tiny_model_dir, *EQUIVALENCE), tmp_path_factory.mktemp("local"))
    finally:
        torch.set_num_threads(before)
