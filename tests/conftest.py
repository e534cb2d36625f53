"""Shared fixtures: a random ~1M-parameter Qwen2 model with our tokenizer, saved as a Hugging Face directory."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from transformers import Qwen2ForCausalLM

from maporl.base.build import BuildConfig, model_config
from maporl.base.data import sft_example
from maporl.base.tokenizer import train_tokenizer
from maporl.tasks.arithmetic import ArithmeticTask

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
