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


def make_tokenizer():
    rng = random.Random(0)
    tasks = {n: ArithmeticTask(n) for n in ("arith_chain", "arith_long", "arith_word")}
    corpus = []
    for i in range(300):
        prompt, target = sft_example(rng, tasks, i)
        corpus.append(f"<|im_start|>user\n{prompt[-1]['content']}<|im_end|>\n<|im_start|>assistant\n{target}")
    return train_tokenizer(corpus, TINY.vocab_size)


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
