"""The GPU check's CPU form (`bench/gpu_check.py --device cpu --tiny`): every phase runs and prints its JSON line
(also to the log), and the memory arithmetic it compares against is that of docs/real_models.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from maporl.models.memory import lora_parameters, parameters, update_peak_estimate

ROOT = Path(__file__).parents[1]
SHAPES = sorted(p.name for p in (ROOT / "bench" / "shapes").iterdir())


def shape(name: str) -> dict:
    return json.loads((ROOT / "bench" / "shapes" / name / "config.json").read_text())


@pytest.mark.parametrize("name", SHAPES)
def test_the_parameter_count_is_the_models_own(name):
    with torch.device("meta"):  # real shapes, no memory
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(ROOT / "bench" / "shapes" / name))
    assert parameters(shape(name)) == sum(p.numel() for p in model.parameters())
    with torch.device("meta"):
        from peft import LoraConfig, get_peft_model

        peft_model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert lora_parameters(shape(name), 8) == lora


def test_the_1_5b_arithmetic_is_the_documented_one():
    """docs/real_models.md, Qwen2.5-1.5B: 1.54 B parameters (3.1 GB in bf16), 9.2 M LoRA parameters per agent
    (3 agents with AdamW state: 0.44 GB), a micro-batch of 8,192 tokens with 2,048 answer positions: 1.5 GB of
    activations with checkpointing (86 KB + 96 KB a token), 1.2 GB of logits, a 0.6 GB log-softmax chunk."""
    parts = update_peak_estimate(
        shape("qwen2.5-1.5b-instruct"), agents=3, rank=8, rows=8, row_tokens=1024, answer_tokens=255
    )
    gb = {k: round(v / 1e9, 2) for k, v in parts.items()}
    assert gb == {
        "weights": 3.09,
        "adapters": 0.44,
        "activations": 1.49,
        "logits": 1.24,
        "logsoftmax_chunk": 0.62,
        "total": 6.89,
    }
    assert parts["activations"] == 8192 * (1536 * 2 * 28 + (8 * 1536 + 4 * 8960) * 2)


@pytest.mark.slow
def test_the_cpu_form_runs_every_phase(tmp_path):
    log = tmp_path / "check.log"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--tiny", "--log", str(log)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    phases = {row["phase"]: row for row in lines}
    assert list(phases) == ["env", "generation", "step_1.5b", "step_7b", "train_embedded", "logprobs", "done"]
    assert phases["generation"]["full_length"] and phases["generation"]["rows"] == 24
    assert all(phases[s]["time/update"] > 0 and phases[s]["answers"] == 32 for s in ("step_1.5b", "step_7b"))
    assert phases["train_embedded"]["steps"] == 2 and len(phases["train_embedded"]["eval_acc_per_turn"]) == 2
    assert phases["logprobs"]["ok"] and phases["done"]["failed"] == []
    assert [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")] == lines


def test_a_missing_gpu_is_one_line_and_exit_2():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--device cpu --tiny" in done.stderr
